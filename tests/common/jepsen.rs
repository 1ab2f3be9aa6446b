//! A queue checker in the style of Jepsen's: every msg_id a sender tried, every ServerAck it
//! got and every delivery a receiver's application saw, each stamped with the relay
//! incarnation (the number of restarts so far); then one verdict classifying every msg_id.
//!
//! - **lost**: acknowledged by ServerAck but never delivered;
//! - **unexpected**: delivered but never sent;
//! - **duplicated**: handed to the application more than once (the client deduplicates by
//!   msg_id, so this is a duplicate *after* deduplication; raw redeliveries the client hid are
//!   counted apart);
//! - **recovered**: first delivered by a later incarnation than the one that acknowledged it.
//!
//! Used by the crash-loop, power-loss and disk-full tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use relaybox::ids::MsgId;

/// What happened, as the test's clients saw it.
#[derive(Debug, Default)]
pub struct History {
    /// msg_id → incarnation of the first attempt.
    sent: BTreeMap<[u8; 16], u64>,
    /// msg_id → incarnation when the ServerAck arrived.
    acked: BTreeMap<[u8; 16], u64>,
    /// msg_id → incarnation of every delivery to the application.
    delivered: BTreeMap<[u8; 16], Vec<u64>>,
    /// Deliveries the client recognised as repeats and hid (relay redeliveries).
    pub raw_redeliveries: u64,
    /// Deliveries the receiver could not decrypt (still counted as delivered).
    pub undecryptable: u64,
    /// Senders that gave up on a message once the load stopped (the relay kept refusing).
    pub stuck_senders: u64,
    /// The last error a send got, for the report.
    pub last_send_error: Option<String>,
}

impl History {
    pub fn sent(&mut self, id: MsgId, incarnation: u64) {
        self.sent.entry(id.0).or_insert(incarnation);
    }

    pub fn acked(&mut self, id: MsgId, incarnation: u64) {
        self.acked.entry(id.0).or_insert(incarnation);
    }

    pub fn delivered(&mut self, id: MsgId, incarnation: u64) {
        self.delivered.entry(id.0).or_default().push(incarnation);
    }

    /// Acknowledged msg_ids not delivered yet.
    pub fn pending(&self) -> usize {
        self.acked
            .keys()
            .filter(|id| !self.delivered.contains_key(*id))
            .count()
    }

    pub fn check(&self) -> Verdict {
        let delivered: BTreeSet<_> = self.delivered.keys().copied().collect();
        let lost = self
            .acked
            .keys()
            .filter(|id| !delivered.contains(*id))
            .map(|id| MsgId(*id))
            .collect();
        let unexpected = delivered
            .iter()
            .filter(|id| !self.sent.contains_key(*id))
            .map(|id| MsgId(*id))
            .collect();
        let duplicated = self
            .delivered
            .iter()
            .filter(|(_, times)| times.len() > 1)
            .map(|(id, _)| MsgId(*id))
            .collect();
        let recovered = self
            .delivered
            .iter()
            .filter(|(id, times)| {
                let first = times.iter().min().copied().unwrap_or(0);
                self.acked.get(*id).is_some_and(|&acked| first > acked)
            })
            .count();
        let delivered_unacked = delivered
            .iter()
            .filter(|id| self.sent.contains_key(*id) && !self.acked.contains_key(*id))
            .count();
        Verdict {
            sent: self.sent.len(),
            acked: self.acked.len(),
            delivered: delivered.len(),
            lost,
            unexpected,
            duplicated,
            recovered,
            delivered_unacked,
            raw_redeliveries: self.raw_redeliveries,
            undecryptable: self.undecryptable,
            stuck_senders: self.stuck_senders,
            last_send_error: self.last_send_error.clone(),
        }
    }
}

/// The classification of every msg_id.
#[derive(Debug)]
pub struct Verdict {
    pub sent: usize,
    pub acked: usize,
    pub delivered: usize,
    pub lost: Vec<MsgId>,
    pub unexpected: Vec<MsgId>,
    pub duplicated: Vec<MsgId>,
    pub recovered: usize,
    /// Sent, never acknowledged, delivered anyway (allowed: the ack died with the relay).
    pub delivered_unacked: usize,
    pub raw_redeliveries: u64,
    pub undecryptable: u64,
    pub stuck_senders: u64,
    pub last_send_error: Option<String>,
}

impl Verdict {
    /// 0 lost, 0 unexpected, 0 duplicated, and no sender left unable to send.
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.duplicated.is_empty()
            && self.stuck_senders == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "sent={} acked={} delivered={} lost={} unexpected={} duplicated={} recovered={} \
             delivered_unacked={} raw_redeliveries={} undecryptable={} stuck_senders={}{}",
            self.sent,
            self.acked,
            self.delivered,
            self.lost.len(),
            self.unexpected.len(),
            self.duplicated.len(),
            self.recovered,
            self.delivered_unacked,
            self.raw_redeliveries,
            self.undecryptable,
            self.stuck_senders,
            match (&self.last_send_error, self.stuck_senders) {
                (Some(e), 1..) => format!(" (last send error: {e})"),
                _ => String::new(),
            }
        )
    }
}
