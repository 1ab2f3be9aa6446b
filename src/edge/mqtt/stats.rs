//! The bridge's counters and state, shared by its tasks and read by operators (logs today;
//! metrics and the admin API read the same struct). One function per notable event both logs
//! and counts it, so the two never disagree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::telemetry::metrics;

/// Why an incoming MQTT message was dropped (logged, counted, acknowledged to the broker so
/// it is not redelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not valid JSON or not the documented schema.
    Malformed,
    /// Larger than `mqtt.max_payload_bytes`.
    Oversize,
    /// The topic's id is not a provisioned device.
    UnknownDevice,
    /// The device names a thread it is not provisioned in.
    ThreadNotAllowed,
    /// The topic's id level is not a valid device id (upper case, `_`, wildcards …).
    BadId,
    /// The payload claims to be another device.
    Impersonation,
    /// The relay refused the message (e.g. the device was removed from the group).
    RelayRefused,
    /// A topic that is none of the relay's.
    Foreign,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        Self::Malformed,
        Self::Oversize,
        Self::UnknownDevice,
        Self::ThreadNotAllowed,
        Self::BadId,
        Self::Impersonation,
        Self::RelayRefused,
        Self::Foreign,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversize => "oversize",
            Self::UnknownDevice => "unknown_device",
            Self::ThreadNotAllowed => "thread_not_allowed",
            Self::BadId => "bad_id",
            Self::Impersonation => "impersonation",
            Self::RelayRefused => "relay_refused",
            Self::Foreign => "foreign_topic",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// Counters of one bridge.
#[derive(Default)]
pub struct BridgeStats {
    pub connected: AtomicBool,
    /// Up messages stored and acknowledged.
    pub up_accepted: AtomicU64,
    /// Up messages seen before (broker redelivery), acknowledged without a resend.
    pub up_duplicates: AtomicU64,
    /// Up sends the relay deferred (rate limit, full disk, shutdown): retried, not acked.
    pub up_deferred: AtomicU64,
    /// Down messages the broker acknowledged.
    pub down_published: AtomicU64,
    /// Device acks turned into receipts.
    pub acks: AtomicU64,
    /// Entries in the outbox (counted at start, then kept up to date).
    pub outbox_depth: AtomicU64,
    /// Broker connection failures.
    pub connection_errors: AtomicU64,
    dropped: [AtomicU64; 8],
    last_error: Mutex<String>,
}

impl BridgeStats {
    /// Logs and counts a dropped message.
    pub fn dropped(&self, reason: DropReason, topic: &str, detail: &str) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::mqtt_dropped(reason.as_str());
        tracing::warn!(
            reason = reason.as_str(),
            topic = %topic.chars().take(120).collect::<String>(),
            detail = %detail,
            "MQTT message dropped."
        );
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    pub fn set_error(&self, e: String) {
        self.connection_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a message (`direction`, `outcome` as in the metric `relaybox_mqtt_messages`).
    pub fn message(&self, direction: &'static str, outcome: &'static str) {
        let counter = match (direction, outcome) {
            ("up", "accepted") => &self.up_accepted,
            ("up", "duplicate") => &self.up_duplicates,
            ("up", "deferred") => &self.up_deferred,
            ("down", "published") => &self.down_published,
            _ => &self.acks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::mqtt_message(direction, outcome);
    }

    pub fn outbox_set(&self, n: u64) {
        self.outbox_depth.store(n, Ordering::Relaxed);
        metrics::mqtt_outbox(n);
    }

    pub fn outbox_added(&self) {
        let n = self.outbox_depth.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::mqtt_outbox(n);
    }

    pub fn outbox_removed(&self) {
        let n = self
            .outbox_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0)
            .saturating_sub(1);
        metrics::mqtt_outbox(n);
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::mqtt_connected(up);
    }

    /// Counts of every drop reason, for the admin API.
    pub fn dropped_all(&self) -> std::collections::BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .map(|&r| (r.as_str(), self.dropped_count(r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_has_its_metric_series_from_the_start() {
        let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels, metrics::MQTT_DROP_REASONS);
    }
}
