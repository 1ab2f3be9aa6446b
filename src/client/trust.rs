//! Trust in a correspondent's keys: safety numbers, key changes, and accepting a new key.
//!
//! The first session with a peer device pins its identity key (`e2e`). After that:
//! - **Someone announces a device change** (a `DevicesChanged` push: they reinstalled, linked or
//!   unlinked a device). Before the next message to them, the client claims the keys of each
//!   device it already has a session with, and compares the identity key with the pinned one.
//! - **A key differs** (in that check, in `verify-contact`, or in a pre-key message from them).
//!   The device is marked changed. Messages to it are refused, and messages from it are held
//!   undecrypted in the state file, until the person accepts the new key. The warning says what
//!   happened and what to do: compare safety numbers, then `accept-key`.
//! - **`accept-key ACCOUNT`** forgets the sessions with the changed devices (the next message
//!   starts a session on the new key) and opens the held messages.
//!
//! Held messages were acknowledged to the relay after they were saved here, so none is lost.

use std::collections::{BTreeSet, VecDeque};

use anyhow::{bail, Context as _};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::{Client, Event};
use crate::e2e::safety::SafetyNumber;
use crate::wire::messages::{Deliver, DeviceKeys};

/// Most messages held from devices with an unaccepted key; beyond it the oldest is dropped
/// with a warning (a flood from an impersonator must not grow the state file without bound).
pub const MAX_HELD: usize = 256;

/// What the client remembers about its trust in peers' keys (part of the state file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trust {
    /// Peer devices whose identity key is compared with the directory's before the next
    /// message to them: their account announced a device change.
    #[serde(default)]
    pub recheck: BTreeSet<(String, u32)>,
    /// Peer devices that presented an identity key other than the pinned one, not yet
    /// accepted.
    #[serde(default)]
    pub changed: BTreeSet<(String, u32)>,
    /// Deliveries from changed devices, held undecrypted: protobuf `Deliver`, hex.
    #[serde(default)]
    pub held: VecDeque<String>,
}

/// The warning for a changed key: what happened and what to do.
pub fn key_changed_warning(account: &str, device: u32) -> String {
    format!(
        "the safety number with {account} changed: their device {device} has a new identity key. \
         They may have reinstalled relaybox on a new phone, or someone may be intercepting. \
         Compare safety numbers with them (relaybox client verify-contact {account}), then accept \
         the new key (relaybox client accept-key {account}). Until then messages to that device \
         are refused and messages from it are held unread."
    )
}

/// One device in a verification: its key in the directory, and how it compares with ours.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedDevice {
    pub account: String,
    pub device: u32,
    /// The Curve25519 identity key, hex.
    pub identity_key: String,
    /// `pinned` (what our sessions use), `new` (no session yet), or `changed` (differs from
    /// the pinned key: not accepted).
    pub status: &'static str,
}

/// The answer of `verify-contact`.
#[derive(Debug, Clone)]
pub struct Verification {
    pub number: SafetyNumber,
    pub devices: Vec<VerifiedDevice>,
}

impl Verification {
    /// Whether any key differs from the pinned one.
    pub fn changed(&self) -> bool {
        self.devices.iter().any(|d| d.status == "changed")
    }
}

impl Client {
    /// The safety number with `peer`, over the identity keys the relay's directory publishes
    /// for every device of both accounts. A key that differs from a pinned one is marked
    /// changed (refused until accepted); a key that matches clears a pending re-check.
    ///
    /// Claiming a device's keys spends one of its one-time keys; they are replenished.
    pub async fn verify_contact(&mut self, peer: &str) -> anyhow::Result<Verification> {
        let me = self.state.account()?.to_owned();
        if peer == me {
            bail!("verify-contact compares your keys with someone else's; give their number");
        }
        let mut devices = Vec::new();
        let mine = self.directory_keys(&me, &mut devices).await?;
        let theirs = self.directory_keys(peer, &mut devices).await?;
        self.state.save()?;
        Ok(Verification {
            number: SafetyNumber::new((&me, &mine), (peer, &theirs)),
            devices,
        })
    }

    /// Every device of `account` with its identity key from the directory (this device's own
    /// key from the local account), compared with the pinned keys.
    async fn directory_keys(
        &mut self,
        account: &str,
        out: &mut Vec<VerifiedDevice>,
    ) -> anyhow::Result<Vec<(u32, [u8; 32])>> {
        let listed = self.devices(account).await?;
        if listed.bridged {
            bail!("{account} is an MQTT device: the relay encrypts for it, so there is no safety number to compare");
        }
        let me = self.state.account.as_deref() == Some(account);
        let own = self.state.device;
        let to_claim: Vec<u32> = listed
            .devices
            .iter()
            .copied()
            .filter(|&d| !(me && d == own))
            .collect();
        let claimed: Vec<DeviceKeys> = if to_claim.is_empty() {
            Vec::new()
        } else {
            self.claim(account, &to_claim).await?
        };
        let mut keys = Vec::new();
        if me {
            keys.push((own, self.state.e2e.identity_key()));
        }
        for d in to_claim {
            let key = claimed
                .iter()
                .find(|k| k.device == d)
                .and_then(|k| <[u8; 32]>::try_from(k.identity_key.as_slice()).ok())
                .with_context(|| {
                    format!(
                        "device {d} of {account} has not published its keys yet; try again shortly"
                    )
                })?;
            let peer = (account.to_owned(), d);
            let status = match self.state.e2e.peer_identity_key(account, d) {
                None => "new",
                Some(pinned) if pinned == key => {
                    self.state.trust.recheck.remove(&peer);
                    "pinned"
                }
                Some(_) => {
                    self.state.trust.recheck.remove(&peer);
                    self.state.trust.changed.insert(peer);
                    "changed"
                }
            };
            out.push(VerifiedDevice {
                account: account.to_owned(),
                device: d,
                identity_key: hex::encode(key),
                status,
            });
            keys.push((d, key));
        }
        Ok(keys)
    }

    /// Accepts the new identity keys of `account`'s changed devices: forgets the sessions made
    /// with the old keys and opens the messages held from those devices. Answers the opened
    /// messages' events.
    pub fn accept_key(&mut self, account: &str) -> anyhow::Result<Vec<Event>> {
        let devices: Vec<u32> = self
            .state
            .trust
            .changed
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, d)| *d)
            .collect();
        if devices.is_empty() {
            bail!("no identity key of {account} has changed; there is nothing to accept");
        }
        for &d in &devices {
            self.state.e2e.forget(account, d);
            let peer = (account.to_owned(), d);
            self.state.trust.changed.remove(&peer);
            self.state.trust.recheck.remove(&peer);
        }
        let mut events = Vec::new();
        let held = std::mem::take(&mut self.state.trust.held);
        for raw in held {
            let d = decode_held(&raw)?;
            let (from, device) = d.encrypted_by();
            if from == account && devices.contains(&device) {
                events.extend(self.open_delivery(&d));
            } else {
                self.state.trust.held.push_back(raw);
            }
        }
        self.state.save()?;
        Ok(events)
    }

    /// Whether messages from this peer device are held (its key changed and is not accepted).
    pub(super) fn is_changed(&self, peer: &str, device: u32) -> bool {
        self.state
            .trust
            .changed
            .contains(&(peer.to_owned(), device))
    }

    /// Whether the key of this peer device is compared with the directory's before the next
    /// message to it.
    pub(super) fn must_recheck(&self, peer: &str, device: u32) -> bool {
        self.state
            .trust
            .recheck
            .contains(&(peer.to_owned(), device))
    }

    /// Marks a peer device changed and holds one delivery from it.
    pub(super) fn hold(&mut self, d: &Deliver) -> Event {
        let (peer, device) = d.encrypted_by();
        self.state.trust.changed.insert((peer.to_owned(), device));
        if self.state.trust.held.len() >= MAX_HELD {
            self.state.trust.held.pop_front();
            tracing::warn!(account = %peer, "Too many messages held from devices with a changed key; the oldest was dropped.");
        }
        self.state
            .trust
            .held
            .push_back(hex::encode(d.encode_to_vec()));
        Event::KeyChanged {
            account: peer.to_owned(),
            device,
        }
    }

    /// After a device change of `account`: re-check the keys of the devices we have sessions
    /// with before the next message to them.
    pub(super) fn recheck_keys(&mut self, account: &str, devices: &[u32]) {
        for &d in devices {
            if self.state.e2e.has_session(account, d) {
                self.state.trust.recheck.insert((account.to_owned(), d));
            }
        }
    }
}

fn decode_held(raw: &str) -> anyhow::Result<Deliver> {
    let bytes = hex::decode(raw).context("a held message in the state file is damaged")?;
    Deliver::decode(bytes.as_slice()).context("a held message in the state file is damaged")
}
