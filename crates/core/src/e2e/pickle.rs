//! The persisted form of an [`E2e`]: the Olm account and every session, as one serde value.
//!
//! It holds private keys in the clear. The client must store it encrypted at rest; where and
//! how is the client's business, not this module's.

use serde::{Deserialize, Serialize};
use vodozemac::olm::{Account, AccountPickle, Session, SessionPickle};
use vodozemac::Curve25519PublicKey;

use super::{E2e, E2eError, Peer, MAX_SESSIONS_PER_DEVICE};

/// Version of the pickle layout written by this build.
const PICKLE_VERSION: u32 = 1;

/// A serialisable snapshot of an [`E2e`]; see [`E2e::to_pickle`] and [`E2e::from_pickle`].
/// Opaque on purpose: it contains secrets, so it has no `Debug`.
#[derive(Serialize, Deserialize)]
pub struct E2ePickle {
    /// Layout version, so a future build can migrate (or refuse) an old file.
    version: u32,
    account: AccountPickle,
    fallback_due: bool,
    /// Sorted by (account, device), so equal states pickle to equal bytes.
    peers: Vec<PeerPickle>,
}

#[derive(Serialize, Deserialize)]
struct PeerPickle {
    account: String,
    device: u32,
    identity_key: Curve25519PublicKey,
    /// Most recently successful first, as in [`Peer::sessions`].
    sessions: Vec<SessionPickle>,
}

impl E2e {
    /// A snapshot of the account and all sessions. Take one after every `keys_to_upload`,
    /// `encrypt` and `decrypt` that the client acts on: an older snapshot would reuse
    /// ratchet state and forget consumed one-time keys.
    pub fn to_pickle(&self) -> E2ePickle {
        let mut peers: Vec<PeerPickle> = self
            .peers
            .iter()
            .map(|((account, device), peer)| PeerPickle {
                account: account.clone(),
                device: *device,
                identity_key: peer.identity_key,
                sessions: peer.sessions.iter().map(Session::pickle).collect(),
            })
            .collect();
        peers.sort_by(|a, b| (&a.account, a.device).cmp(&(&b.account, b.device)));
        E2ePickle {
            version: PICKLE_VERSION,
            account: self.account.pickle(),
            fallback_due: self.fallback_due,
            peers,
        }
    }

    /// Restores an [`E2e`] from [`E2e::to_pickle`]'s snapshot.
    pub fn from_pickle(pickle: E2ePickle) -> Result<Self, E2eError> {
        if pickle.version != PICKLE_VERSION {
            return Err(E2eError::PickleVersion(pickle.version));
        }
        let peers = pickle
            .peers
            .into_iter()
            // Keeps the invariants of `Peer` even for a hand-edited file.
            .filter(|p| !p.sessions.is_empty())
            .map(|p| {
                let sessions = p
                    .sessions
                    .into_iter()
                    .take(MAX_SESSIONS_PER_DEVICE)
                    .map(Session::from_pickle)
                    .collect();
                let peer = Peer {
                    identity_key: p.identity_key,
                    sessions,
                };
                ((p.account, p.device), peer)
            })
            .collect();
        Ok(Self {
            account: Account::from_pickle(pickle.account),
            peers,
            fallback_due: pickle.fallback_due,
        })
    }
}
