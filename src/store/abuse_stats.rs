//! The per-account abuse metrics over a sliding window, as a plain value (no sled): what one
//! send or one block changes, and what the window adds up to. `abuse.rs` stores it.
//!
//! # What the relay may see
//!
//! Only the traffic pattern: who sends to whom, whether the recipient has the sender in its
//! contacts, and the size of each end-to-end envelope (the same text encrypts to the same
//! size). Never content.
//!
//! # Shape and bounds
//!
//! The window is cut into at most [`BUCKETS`] buckets of counters (a bucket covers
//! `window / BUCKETS`, at least one second); buckets older than the window are dropped on each
//! update. Peers and envelope sizes seen in the window are kept as (fingerprint, last seen)
//! lists capped at [`MAX_PEERS`] and [`MAX_SIZES`]; past the cap the stalest entry goes, so
//! an account with more peers than that only looks *less* repetitive, never more.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Buckets per window.
pub const BUCKETS: u64 = 30;
/// Most distinct peers remembered per account.
pub const MAX_PEERS: usize = 1024;
/// Most distinct envelope sizes remembered per account.
pub const MAX_SIZES: usize = 256;

/// Counters of one slice of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: u64,
    /// Messages sent (one per Send, whatever its fan-out).
    pub sent: u32,
    /// Messages to an account that has the sender in its contacts.
    pub symmetric: u32,
    /// Messages to a peer not messaged before in the window (new conversations).
    pub new_peers: u32,
    /// Messages whose envelope size was not seen before in the window.
    pub new_sizes: u32,
    /// Blocks this account received.
    pub blocks: u32,
}

/// One account's stored metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseStats {
    /// Oldest first.
    pub buckets: Vec<Bucket>,
    /// (peer fingerprint, last message ms).
    pub peers: Vec<(u64, u64)>,
    /// (envelope size, last message ms).
    pub sizes: Vec<(u32, u64)>,
}

/// What one send looked like, for [`AbuseStats::record_send`].
#[derive(Debug, Clone, Copy)]
pub struct SendFacts<'a> {
    /// The recipient account, or the group id for a group send.
    pub peer: &'a str,
    /// Whether the recipient has the sender in its contacts (group sends: true, a group is
    /// a conversation its members joined).
    pub symmetric: bool,
    /// Size of the first envelope's ciphertext.
    pub size: u32,
}

/// The window added up: what the monitor judges and operators see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowMetrics {
    pub messages: u32,
    pub new_conversations: u32,
    pub distinct_peers: u32,
    pub blocks: u32,
    /// Percent of messages to accounts that have the sender in their contacts.
    pub symmetry_percent: u32,
    /// Percent of messages to a peer not messaged before in the window.
    pub peer_uniqueness_percent: u32,
    /// Percent of messages with an envelope size not seen before in the window.
    pub message_uniqueness_percent: u32,
    /// Blocks per distinct peer, percent.
    pub block_rate_percent: u32,
    /// Messages per minute over the window.
    pub messages_per_minute: u32,
}

/// A stable fingerprint of a peer id (stable across versions, unlike `DefaultHasher`).
pub fn fingerprint(peer: &str) -> u64 {
    let d = Sha256::digest(peer.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

fn percent(part: u32, whole: u32) -> u32 {
    if whole == 0 {
        return 0;
    }
    u32::try_from(u64::from(part) * 100 / u64::from(whole)).unwrap_or(100)
}

impl AbuseStats {
    /// Whether `peer` was messaged in the window ending at `now_ms`.
    pub fn knows_peer(&self, peer: &str, now_ms: u64, window_ms: u64) -> bool {
        let f = fingerprint(peer);
        let since = now_ms.saturating_sub(window_ms);
        self.peers.iter().any(|&(p, at)| p == f && at >= since)
    }

    /// Drops what fell out of the window.
    fn expire(&mut self, now_ms: u64, window_ms: u64) {
        let since = now_ms.saturating_sub(window_ms);
        self.buckets.retain(|b| b.start_ms >= since);
        self.peers.retain(|&(_, at)| at >= since);
        self.sizes.retain(|&(_, at)| at >= since);
    }

    /// The bucket for `now_ms`, opened if needed.
    fn bucket(&mut self, now_ms: u64, window_ms: u64) -> &mut Bucket {
        let width = (window_ms / BUCKETS).max(1000);
        let open_new = self
            .buckets
            .last()
            .is_none_or(|b| now_ms >= b.start_ms.saturating_add(width));
        if open_new {
            self.buckets.push(Bucket {
                start_ms: now_ms - now_ms % width,
                ..Bucket::default()
            });
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// Counts one send.
    pub fn record_send(&mut self, facts: SendFacts<'_>, now_ms: u64, window_ms: u64) {
        self.expire(now_ms, window_ms);
        let f = fingerprint(facts.peer);
        let new_peer = match self.peers.iter_mut().find(|(p, _)| *p == f) {
            Some(entry) => {
                entry.1 = now_ms;
                false
            }
            None => {
                remember(&mut self.peers, f, now_ms, MAX_PEERS);
                true
            }
        };
        let new_size = match self.sizes.iter_mut().find(|(s, _)| *s == facts.size) {
            Some(entry) => {
                entry.1 = now_ms;
                false
            }
            None => {
                remember(&mut self.sizes, facts.size, now_ms, MAX_SIZES);
                true
            }
        };
        let b = self.bucket(now_ms, window_ms);
        b.sent = b.sent.saturating_add(1);
        b.symmetric = b.symmetric.saturating_add(u32::from(facts.symmetric));
        b.new_peers = b.new_peers.saturating_add(u32::from(new_peer));
        b.new_sizes = b.new_sizes.saturating_add(u32::from(new_size));
    }

    /// Counts one block received.
    pub fn record_block(&mut self, now_ms: u64, window_ms: u64) {
        self.expire(now_ms, window_ms);
        let b = self.bucket(now_ms, window_ms);
        b.blocks = b.blocks.saturating_add(1);
    }

    /// The window ending at `now_ms`, added up.
    pub fn metrics(&self, now_ms: u64, window_ms: u64) -> WindowMetrics {
        let since = now_ms.saturating_sub(window_ms);
        let mut m = WindowMetrics::default();
        let mut symmetric = 0u32;
        let mut new_sizes = 0u32;
        for b in self.buckets.iter().filter(|b| b.start_ms >= since) {
            m.messages = m.messages.saturating_add(b.sent);
            symmetric = symmetric.saturating_add(b.symmetric);
            m.new_conversations = m.new_conversations.saturating_add(b.new_peers);
            new_sizes = new_sizes.saturating_add(b.new_sizes);
            m.blocks = m.blocks.saturating_add(b.blocks);
        }
        m.distinct_peers =
            u32::try_from(self.peers.iter().filter(|p| p.1 >= since).count()).unwrap_or(u32::MAX);
        m.symmetry_percent = percent(symmetric, m.messages);
        m.peer_uniqueness_percent = percent(m.new_conversations, m.messages);
        m.message_uniqueness_percent = percent(new_sizes, m.messages);
        m.block_rate_percent = percent(m.blocks, m.distinct_peers.max(1));
        let minutes = (window_ms / 60_000).max(1);
        m.messages_per_minute = u32::try_from(u64::from(m.messages) / minutes).unwrap_or(u32::MAX);
        m
    }

    /// Whether nothing is left in the window (the record can be deleted).
    pub fn is_idle(&self, now_ms: u64, window_ms: u64) -> bool {
        let since = now_ms.saturating_sub(window_ms);
        self.buckets.iter().all(|b| b.start_ms < since)
    }
}

/// Adds `(key, at)` to a capped list, evicting the stalest entry when full.
fn remember<K: Copy>(list: &mut Vec<(K, u64)>, key: K, at: u64, cap: usize) {
    if list.len() >= cap {
        if let Some(i) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.1)
            .map(|(i, _)| i)
        {
            list.swap_remove(i);
        }
    }
    list.push((key, at));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn send(s: &mut AbuseStats, peer: &str, symmetric: bool, size: u32, at: u64) {
        s.record_send(
            SendFacts {
                peer,
                symmetric,
                size,
            },
            at,
            HOUR,
        );
    }

    #[test]
    fn a_spammer_is_asymmetric_unique_in_peers_and_repetitive_in_sizes() {
        let mut s = AbuseStats::default();
        for i in 0..200 {
            send(&mut s, &format!("+1555000{i:04}"), false, 180, 1_000 + i);
        }
        let m = s.metrics(2_000, HOUR);
        assert_eq!(m.messages, 200);
        assert_eq!(m.symmetry_percent, 0);
        assert_eq!(m.peer_uniqueness_percent, 100);
        assert_eq!(m.message_uniqueness_percent, 0);
        assert_eq!(m.distinct_peers, 200);
    }

    #[test]
    fn a_chat_between_contacts_is_symmetric_and_repeats_peers() {
        let mut s = AbuseStats::default();
        for i in 0..100u32 {
            send(
                &mut s,
                &format!("+1555{}", i % 10),
                true,
                100 + i % 37,
                u64::from(i) * 1000,
            );
        }
        let m = s.metrics(100_000, HOUR);
        assert_eq!(m.symmetry_percent, 100);
        assert_eq!(m.peer_uniqueness_percent, 10);
        assert_eq!(m.new_conversations, 10);
    }

    #[test]
    fn the_window_slides_and_the_lists_stay_bounded() {
        let mut s = AbuseStats::default();
        for i in 0..(MAX_PEERS as u64 + 10) {
            send(
                &mut s,
                &format!("p{i}"),
                false,
                u32::try_from(i).unwrap(),
                i,
            );
        }
        assert!(s.peers.len() <= MAX_PEERS && s.sizes.len() <= MAX_SIZES);
        assert!(s.buckets.len() as u64 <= BUCKETS + 1);
        s.record_block(3 * HOUR, HOUR);
        let m = s.metrics(3 * HOUR, HOUR);
        assert_eq!((m.messages, m.blocks), (0, 1));
        assert!(s.is_idle(5 * HOUR, HOUR));
    }
}
