//! Presence: which accounts are online, pushed only to the interested and allowed subset.
//!
//! An account is available while any of its devices has a session. A change is pushed to the
//! online devices of accounts that have it in their contacts and that its privacy setting
//! allows (everyone who has me / only my mutual contacts / nobody). Nobody else learns
//! anything. Presence is ephemeral: pushed to online devices, never queued.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Directory;
use crate::ids::{AccountId, DeviceId};
use crate::store::{Store, StoreError};
use crate::wire::messages::{server_frame, PresenceEvent, PresencePrivacy, ServerFrame};

/// Privacy of an account that never chose one.
pub const DEFAULT_PRIVACY: PresencePrivacy = PresencePrivacy::Contacts;

/// Live session counts per account.
#[derive(Default)]
pub struct Presence {
    sessions: Mutex<HashMap<AccountId, usize>>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, usize>> {
        // Counters change in single steps; a poisoned lock is still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_online(&self, account: &AccountId) -> bool {
        self.lock().get(account).is_some_and(|&n| n > 0)
    }

    /// A session of `account` started. Announces availability on the first one.
    pub fn attached(&self, store: &Store, directory: &Directory, account: &AccountId) {
        let first = {
            let mut s = self.lock();
            let n = s.entry(account.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            announce(store, directory, account, true, 0);
        }
    }

    /// A session of `account` ended. Records last-seen and announces on the last one.
    pub fn detached(&self, store: &Store, directory: &Directory, account: &AccountId) {
        let last = {
            let mut s = self.lock();
            match s.get_mut(account) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    s.remove(account);
                    true
                }
                None => false,
            }
        };
        if last {
            let now = crate::clock::now_ms();
            if let Err(e) = store.last_seen_set(account, now) {
                tracing::warn!(account = %account, error = %e, "Recording last-seen failed.");
            }
            announce(store, directory, account, false, now);
        }
    }

    /// The presence of `viewer`'s contacts that allow it, for a session that just started.
    pub fn snapshot_for(
        &self,
        store: &Store,
        viewer: &AccountId,
    ) -> Result<Vec<PresenceEvent>, StoreError> {
        let mut out = Vec::new();
        for c in store.contacts(viewer)? {
            if c != *viewer && allowed(store, &c, viewer)? {
                let available = self.is_online(&c);
                let last_seen_ms = if available { 0 } else { store.last_seen(&c)? };
                out.push(PresenceEvent {
                    account: c.to_string(),
                    available,
                    last_seen_ms,
                });
            }
        }
        Ok(out)
    }
}

/// Whether `viewer` may see `subject`'s presence: it has `subject` in its contacts, and
/// `subject`'s privacy allows it, and `subject` has not blocked `viewer`.
pub fn allowed(store: &Store, subject: &AccountId, viewer: &AccountId) -> Result<bool, StoreError> {
    if !store.has_contact(viewer, subject)? || store.is_blocked(subject, viewer)? {
        return Ok(false);
    }
    let privacy = store
        .privacy(subject)?
        .and_then(|p| PresencePrivacy::try_from(i32::from(p)).ok())
        .filter(|p| *p != PresencePrivacy::Unspecified)
        .unwrap_or(DEFAULT_PRIVACY);
    Ok(match privacy {
        PresencePrivacy::Everyone => true,
        PresencePrivacy::Contacts | PresencePrivacy::Unspecified => {
            store.has_contact(subject, viewer)?
        }
        PresencePrivacy::Nobody => false,
    })
}

fn announce(
    store: &Store,
    directory: &Directory,
    account: &AccountId,
    available: bool,
    last_seen_ms: u64,
) {
    let viewers = match store.contact_of(account) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "Reading reverse contacts failed; presence not announced.");
            return;
        }
    };
    let event = PresenceEvent {
        account: account.to_string(),
        available,
        last_seen_ms,
    };
    for viewer in viewers {
        if viewer == *account || !allowed(store, account, &viewer).unwrap_or(false) {
            continue;
        }
        for (no, _) in store.devices(&viewer).unwrap_or_default() {
            let frame = ServerFrame {
                req_id: 0,
                body: Some(server_frame::Body::Presence(event.clone())),
            };
            directory.ephemeral(&DeviceId::new(viewer.clone(), no), frame);
        }
    }
}
