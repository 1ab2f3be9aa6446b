//! Trust in a correspondent's keys, as the CLI client has it (`relaybox client verify-contact`
//! and `accept-key`): the safety number over every device of both accounts, drawn as digits
//! and a QR code; a device whose identity key changed is refused (sends fail, its messages are
//! held in the saved state) until the person accepts the new key.

use std::collections::BTreeSet;

use prost::Message as _;
use relaybox_core::e2e::safety::SafetyNumber;
use relaybox_core::wire::messages::{client_frame, ClaimKeys, ClaimedKeys, Deliver, GetDevices};

use super::{Companion, Event, Pending, WebError};

/// Most messages held from devices with an unaccepted key (the oldest is dropped beyond it).
pub const MAX_HELD: usize = 256;

/// The warning for a changed key, in the page's words.
pub fn key_changed_warning(account: &str, device: u32) -> String {
    format!(
        "The safety number with {account} changed: their device {device} has a new identity key. \
         They may have reinstalled relaybox on a new phone, or someone may be intercepting. \
         Compare safety numbers with them (Verify), then accept the new key. Until then messages \
         to that device are refused and messages from it are held unread."
    )
}

impl Companion {
    /// Asks the relay for the keys the safety number covers; a `safety_number` event follows.
    /// Claiming spends one one-time key of each other device; they are replenished.
    pub fn verify_contact(&mut self, peer: &str) -> Result<(), WebError> {
        relaybox_core::ids::AccountId::parse(peer).map_err(|e| WebError(e.to_string()))?;
        let Some(me) = self.account.clone() else {
            return Err(WebError("this browser is not linked yet".into()));
        };
        if peer == me {
            return Err(WebError(
                "a safety number compares your keys with someone else's".into(),
            ));
        }
        if !self.is_ready() {
            return Err(WebError("not connected to the relay".into()));
        }
        self.send_frame(
            client_frame::Body::GetDevices(GetDevices { account: me }),
            Some(Pending::VerifyOwnDevices {
                peer: peer.to_owned(),
            }),
        );
        Ok(())
    }

    /// Our own account's devices: claim the others' keys (ours is local).
    pub(super) fn verify_own_devices(&mut self, peer: String, devices: Vec<u32>) {
        let me = self.account.clone().unwrap_or_default();
        let others: Vec<u32> = devices.into_iter().filter(|&d| d != self.device).collect();
        if others.is_empty() {
            let mine = vec![(self.device, self.e2e.identity_key())];
            return self.claim_peer_keys(peer, mine);
        }
        self.send_frame(
            client_frame::Body::ClaimKeys(ClaimKeys {
                account: me,
                devices: others,
            }),
            Some(Pending::VerifyOwnKeys { peer }),
        );
    }

    pub(super) fn verify_own_keys(&mut self, peer: String, c: ClaimedKeys) {
        let mut mine = vec![(self.device, self.e2e.identity_key())];
        mine.extend(self.compare_keys(&c));
        self.claim_peer_keys(peer, mine);
    }

    fn claim_peer_keys(&mut self, peer: String, mine: Vec<(u32, [u8; 32])>) {
        self.send_frame(
            client_frame::Body::ClaimKeys(ClaimKeys {
                account: peer.clone(),
                devices: Vec::new(),
            }),
            Some(Pending::VerifyPeerKeys { peer, mine }),
        );
    }

    pub(super) fn verify_peer_keys(
        &mut self,
        peer: String,
        mine: Vec<(u32, [u8; 32])>,
        c: ClaimedKeys,
    ) {
        let theirs = self.compare_keys(&c);
        let me = self.account.clone().unwrap_or_default();
        let number = SafetyNumber::new((&me, &mine), (&peer, &theirs));
        let qr_svg = crate::qr_svg(&number.qr_payload()).unwrap_or_default();
        let changed: Vec<u32> = self
            .changed
            .iter()
            .filter(|(a, _)| *a == peer)
            .map(|(_, d)| *d)
            .collect();
        self.events.push(Event::SafetyNumber {
            account: peer,
            digits: number.digits().to_owned(),
            grouped: number.grouped(),
            qr_svg,
            changed,
        });
    }

    /// The claimed identity keys, each compared with the pinned one: a different key marks
    /// the device changed.
    fn compare_keys(&mut self, c: &ClaimedKeys) -> Vec<(u32, [u8; 32])> {
        let mut keys = Vec::new();
        for d in &c.devices {
            let Ok(key) = <[u8; 32]>::try_from(d.identity_key.as_slice()) else {
                continue;
            };
            if self
                .e2e
                .peer_identity_key(&c.account, d.device)
                .is_some_and(|pinned| pinned != key)
            {
                self.changed.insert((c.account.clone(), d.device));
            }
            keys.push((d.device, key));
        }
        keys
    }

    /// Accepts the new identity keys of `account`'s changed devices: forgets the sessions made
    /// with the old keys and opens the messages held from those devices.
    pub fn accept_key(&mut self, account: &str) -> Result<(), WebError> {
        let devices: BTreeSet<u32> = self
            .changed
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, d)| *d)
            .collect();
        if devices.is_empty() {
            return Err(WebError(format!(
                "no identity key of {account} has changed; there is nothing to accept"
            )));
        }
        for &d in &devices {
            self.e2e.forget(account, d);
            self.changed.remove(&(account.to_owned(), d));
        }
        for raw in std::mem::take(&mut self.held) {
            let Ok(d) = Deliver::decode(raw.as_slice()) else {
                continue;
            };
            if held_from(&d, account, &devices) {
                self.open(d);
            } else {
                self.held.push(raw);
            }
        }
        Ok(())
    }

    /// Whether deliveries from this device are held.
    pub(super) fn is_changed(&self, peer: &str, device: u32) -> bool {
        self.changed.contains(&(peer.to_owned(), device))
    }

    /// Holds a delivery from a device whose key changed, and tells the page.
    pub(super) fn hold(&mut self, d: &Deliver, peer: &str, device: u32) {
        self.changed.insert((peer.to_owned(), device));
        if self.held.len() >= MAX_HELD {
            self.held.remove(0);
        }
        self.held.push(d.encode_to_vec());
        self.events.push(Event::KeyChanged {
            account: peer.to_owned(),
            device,
            warning: key_changed_warning(peer, device),
        });
    }
}

fn held_from(d: &Deliver, account: &str, devices: &BTreeSet<u32>) -> bool {
    let (peer, device) = d.encrypted_by();
    peer == account && devices.contains(&device)
}
