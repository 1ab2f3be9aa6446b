//! The relay's Prometheus metrics: one registry for the process, small functions that the
//! edges, the store and the actors call when something happens, and [`render`] for
//! `GET /metrics` on the admin listener.
//!
//! It owns the metric names and their meaning; it does not own where the numbers come from.
//! Values that are cheaper to read from the store at scrape time than to keep up to date
//! (queue depth, accounts, blobs) are passed to [`render`] in a [`Snapshot`].
//!
//! One process-wide registry (rather than a handle passed around) because the counters are
//! bumped from deep inside the session and store code; everything here is lock-free atomics
//! except the first use of a label set. Nothing here ever holds message content: the only
//! labels are transport names, handshake patterns and outcomes.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s output (the OpenMetrics text format, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every metric of the relay.
struct Metrics {
    registry: Registry,
    connections: Family<Labels1, Gauge>,
    handshakes: Family<Labels2, Counter>,
    accepted: Counter,
    delivered: Counter,
    barrier: Histogram,
    send_ack: Histogram,
    request_errors: Family<Labels1, Counter>,
    connections_refused: Family<Labels1, Counter>,
    queue_depth: Gauge,
    accounts: Gauge,
    devices: Gauge,
    blobs: Gauge,
    blob_bytes: Gauge,
    blobs_stored: Counter,
    blob_bytes_stored: Counter,
    start_time: Gauge,
    mqtt_connected: Gauge,
    mqtt_messages: Family<Labels2, Counter>,
    mqtt_dropped: Family<Labels1, Counter>,
    mqtt_outbox: Gauge,
    abuse_verdicts: Family<Labels1, Counter>,
    bans: Gauge,
    watch_list: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("relaybox");
        let connections = Family::<Labels1, Gauge>::default();
        registry.register(
            "connections",
            "Open client connections, by transport (tcp, ws, http)",
            connections.clone(),
        );
        let handshakes = Family::<Labels2, Counter>::default();
        registry.register(
            "handshakes",
            "Noise handshakes, by pattern (XX, IK) and outcome (ok, refused, failed)",
            handshakes.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "messages_accepted",
            "Messages made durable and acknowledged to their sender (one per Send)",
            accepted.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "messages_delivered",
            "Queue entries acknowledged by the recipient device and deleted",
            delivered.clone(),
        );
        // 50 µs … ~1.6 s: an fsync on flash is a few ms, a slow disk tens to hundreds.
        let barrier = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register_with_unit(
            "durability_barrier_latency",
            "Time a writer waits at the durability barrier (group commit) before it may acknowledge",
            prometheus_client::registry::Unit::Seconds,
            barrier.clone(),
        );
        // The same range: an ack waits for the barrier plus the actor hops around it.
        let send_ack = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register_with_unit(
            "send_ack_latency",
            "Time from a Send's arrival to its ServerAck (durable and acknowledged)",
            prometheus_client::registry::Unit::Seconds,
            send_ack.clone(),
        );
        let request_errors = Family::<Labels1, Counter>::default();
        registry.register(
            "request_errors",
            "Requests answered with an error, by wire error code (ERROR_CODE_RATE_LIMITED, ERROR_CODE_BANNED, …)",
            request_errors.clone(),
        );
        let connections_refused = Family::<Labels1, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused before their handshake, by limit (relay_limit, address_limit, handshake_rate)",
            connections_refused.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Entries waiting in device queues (read from the store at scrape)",
            queue_depth.clone(),
        );
        let accounts = Gauge::default();
        registry.register("accounts", "Registered accounts", accounts.clone());
        let devices = Gauge::default();
        registry.register(
            "devices",
            "Registered devices (primaries and companions)",
            devices.clone(),
        );
        let blobs = Gauge::default();
        registry.register("blobs", "Blob files held", blobs.clone());
        let blob_bytes = Gauge::default();
        registry.register_with_unit(
            "blob_size",
            "Bytes of blob files held",
            prometheus_client::registry::Unit::Bytes,
            blob_bytes.clone(),
        );
        let blobs_stored = Counter::default();
        registry.register(
            "blobs_stored",
            "Blobs uploaded and stored since start",
            blobs_stored.clone(),
        );
        let blob_bytes_stored = Counter::default();
        registry.register_with_unit(
            "blob_stored",
            "Bytes of blobs uploaded and stored since start",
            prometheus_client::registry::Unit::Bytes,
            blob_bytes_stored.clone(),
        );
        let start_time = Gauge::default();
        registry.register_with_unit(
            "start_time",
            "When the relay started (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            start_time.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "1 while the MQTT bridge is connected to its broker",
            mqtt_connected.clone(),
        );
        let mqtt_messages = Family::<Labels2, Counter>::default();
        registry.register(
            "mqtt_messages",
            "MQTT bridge messages, by direction (up, down) and outcome (accepted, duplicate, published, acked)",
            mqtt_messages.clone(),
        );
        let mqtt_dropped = Family::<Labels1, Counter>::default();
        registry.register(
            "mqtt_dropped",
            "MQTT messages from devices dropped as bad input, by reason",
            mqtt_dropped.clone(),
        );
        let mqtt_outbox = Gauge::default();
        registry.register(
            "mqtt_outbox_depth",
            "Down messages waiting in the MQTT outbox for the broker's acknowledgement",
            mqtt_outbox.clone(),
        );
        let abuse_verdicts = Family::<Labels1, Counter>::default();
        registry.register(
            "abuse_verdicts",
            "Verdicts of the abuse monitor, by kind (ban, watch)",
            abuse_verdicts.clone(),
        );
        let bans = Gauge::default();
        registry.register("bans", "Accounts banned for abuse now", bans.clone());
        let watch_list = Gauge::default();
        registry.register(
            "abuse_watch_list",
            "Accounts on the abuse watch list now",
            watch_list.clone(),
        );
        Self {
            registry,
            abuse_verdicts,
            bans,
            watch_list,
            mqtt_connected,
            mqtt_messages,
            mqtt_dropped,
            mqtt_outbox,
            connections,
            handshakes,
            accepted,
            delivered,
            barrier,
            send_ack,
            request_errors,
            connections_refused,
            queue_depth,
            accounts,
            devices,
            blobs,
            blob_bytes,
            blobs_stored,
            blob_bytes_stored,
            start_time,
        }
    }
}

/// Records the process start time and creates every labelled series at zero, so that a
/// scrape of an idle relay already shows them (call once, from `relaybox serve`).
pub fn started() {
    let secs = crate::clock::now_ms() / 1000;
    METRICS
        .start_time
        .set(i64::try_from(secs).unwrap_or(i64::MAX));
    for t in TRANSPORTS {
        drop(METRICS.connections.get_or_create(&[("transport", t)]));
    }
    for pattern in HANDSHAKE_PATTERNS {
        for outcome in HANDSHAKE_OUTCOMES {
            drop(
                METRICS
                    .handshakes
                    .get_or_create(&[("pattern", pattern), ("outcome", outcome)]),
            );
        }
    }
    for code in COUNTED_ERROR_CODES {
        drop(METRICS.request_errors.get_or_create(&[("code", code)]));
    }
    for reason in REFUSAL_REASONS {
        drop(
            METRICS
                .connections_refused
                .get_or_create(&[("reason", reason)]),
        );
    }
    for (direction, outcome) in MQTT_MESSAGE_KINDS {
        drop(
            METRICS
                .mqtt_messages
                .get_or_create(&[("direction", direction), ("outcome", outcome)]),
        );
    }
    for reason in MQTT_DROP_REASONS {
        drop(METRICS.mqtt_dropped.get_or_create(&[("reason", reason)]));
    }
    for verdict in ABUSE_VERDICTS {
        drop(
            METRICS
                .abuse_verdicts
                .get_or_create(&[("verdict", verdict)]),
        );
    }
}

/// Error codes whose series exist from the start (the dashboard's rate-limit and ban panels
/// query them); any other code gets its series when it first happens.
pub const COUNTED_ERROR_CODES: [&str; 4] = [
    "ERROR_CODE_RATE_LIMITED",
    "ERROR_CODE_BANNED",
    "ERROR_CODE_QUOTA_EXCEEDED",
    "ERROR_CODE_STORAGE_FULL",
];

/// Why [`connection_refused`] refused a connection.
pub const REFUSAL_REASONS: [&str; 3] = ["relay_limit", "address_limit", "handshake_rate"];

/// The (direction, outcome) pairs [`mqtt_message`] is called with.
pub const MQTT_MESSAGE_KINDS: [(&str, &str); 5] = [
    ("up", "accepted"),
    ("up", "duplicate"),
    ("up", "deferred"),
    ("down", "published"),
    ("down", "acked"),
];

/// The reasons [`mqtt_dropped`] is called with (`edge::mqtt::stats::DropReason`, whose test
/// keeps the two lists equal).
pub const MQTT_DROP_REASONS: [&str; 8] = [
    "malformed",
    "oversize",
    "unknown_device",
    "thread_not_allowed",
    "bad_id",
    "impersonation",
    "relay_refused",
    "foreign_topic",
];

/// The verdicts [`abuse_verdict`] is called with.
pub const ABUSE_VERDICTS: [&str; 2] = ["ban", "watch"];

/// The handshake patterns and outcomes [`handshake`] is called with.
pub const HANDSHAKE_PATTERNS: [&str; 2] = ["XX", "IK"];
pub const HANDSHAKE_OUTCOMES: [&str; 3] = ["ok", "refused", "failed"];

/// A client connection over `transport` (`"tcp"`, `"ws"`, `"http"`) was admitted.
pub fn connection_opened(transport: &'static str) {
    METRICS
        .connections
        .get_or_create(&[("transport", transport)])
        .inc();
}

/// A client connection over `transport` ended.
pub fn connection_closed(transport: &'static str) {
    METRICS
        .connections
        .get_or_create(&[("transport", transport)])
        .dec();
}

/// Counts a connection for as long as the guard lives.
pub struct ConnectionGuard(&'static str);

/// Counts a connection over `transport` until the returned guard is dropped.
pub fn connection(transport: &'static str) -> ConnectionGuard {
    connection_opened(transport);
    ConnectionGuard(transport)
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        connection_closed(self.0);
    }
}

/// A handshake with `pattern` (`"XX"`, `"IK"`) ended with `outcome` (`"ok"`: logged in;
/// `"refused"`: the login was refused; `"failed"`: the handshake itself failed).
pub fn handshake(pattern: &'static str, outcome: &'static str) {
    METRICS
        .handshakes
        .get_or_create(&[("pattern", pattern), ("outcome", outcome)])
        .inc();
}

/// A `Send` was made durable and acknowledged.
pub fn message_accepted() {
    METRICS.accepted.inc();
}

/// A device acknowledged a queued entry.
pub fn message_delivered() {
    METRICS.delivered.inc();
}

/// A writer waited `took` at the durability barrier.
pub fn barrier_latency(took: Duration) {
    METRICS.barrier.observe(took.as_secs_f64());
}

/// A `Send` was answered with its `ServerAck` `took` after it arrived.
pub fn send_acked(took: Duration) {
    METRICS.send_ack.observe(took.as_secs_f64());
}

/// A request was answered with the error `code` (the wire name, e.g. `ERROR_CODE_BANNED`).
pub fn request_error(code: &'static str) {
    METRICS
        .request_errors
        .get_or_create(&[("code", code)])
        .inc();
}

/// A connection was refused by the admission limit `reason` (one of [`REFUSAL_REASONS`]).
pub fn connection_refused(reason: &'static str) {
    METRICS
        .connections_refused
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// A blob of `bytes` was stored.
pub fn blob_stored(bytes: u64) {
    METRICS.blobs_stored.inc();
    METRICS.blob_bytes_stored.inc_by(bytes);
}

/// The MQTT bridge connected to (or lost) its broker.
pub fn mqtt_connected(up: bool) {
    METRICS.mqtt_connected.set(i64::from(up));
}

/// An MQTT bridge message went `direction` (`"up"`, `"down"`) with `outcome`.
pub fn mqtt_message(direction: &'static str, outcome: &'static str) {
    METRICS
        .mqtt_messages
        .get_or_create(&[("direction", direction), ("outcome", outcome)])
        .inc();
}

/// A device's MQTT message was dropped as bad input.
pub fn mqtt_dropped(reason: &'static str) {
    METRICS
        .mqtt_dropped
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// The MQTT outbox now holds `depth` entries.
pub fn mqtt_outbox(depth: u64) {
    METRICS.mqtt_outbox.set(gauge_value(depth));
}

/// The abuse monitor decided `kind` (`ban`, `watch`) about an account.
pub fn abuse_verdict(kind: &'static str) {
    METRICS
        .abuse_verdicts
        .get_or_create(&[("verdict", kind)])
        .inc();
}

/// Accounts banned now, and on the watch list now.
pub fn abuse_lists(bans: usize, watched: usize) {
    METRICS.bans.set(i64::try_from(bans).unwrap_or(i64::MAX));
    METRICS
        .watch_list
        .set(i64::try_from(watched).unwrap_or(i64::MAX));
}

/// The client transports, in the order reports list them.
pub const TRANSPORTS: [&str; 3] = ["tcp", "ws", "http"];

/// Open connections over `transport` now.
pub fn open_connections(transport: &'static str) -> i64 {
    METRICS
        .connections
        .get(&[("transport", transport)])
        .map(|g| g.get())
        .unwrap_or(0)
}

/// What [`render`] reads from the store at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub queue_depth: u64,
    pub accounts: u64,
    pub devices: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The metrics in the OpenMetrics text format, with `snapshot`'s values for the gauges that
/// are read at scrape time.
pub fn render(snapshot: &Snapshot) -> String {
    let m = &*METRICS;
    m.queue_depth.set(gauge_value(snapshot.queue_depth));
    m.accounts.set(gauge_value(snapshot.accounts));
    m.devices.set(gauge_value(snapshot.devices));
    m.blobs.set(gauge_value(snapshot.blobs));
    m.blob_bytes.set(gauge_value(snapshot.blob_bytes));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_has_every_family_and_moves_with_events() {
        connection_opened("tcp");
        handshake("XX", "ok");
        message_accepted();
        barrier_latency(Duration::from_millis(2));
        let text = render(&Snapshot {
            queue_depth: 7,
            ..Snapshot::default()
        });
        for family in [
            "relaybox_connections{transport=\"tcp\"} ",
            "relaybox_handshakes_total{",
            "relaybox_messages_accepted_total ",
            // Any value: the device actor's tests deliver in this same process.
            "relaybox_messages_delivered_total ",
            "relaybox_durability_barrier_latency_seconds_bucket{le=",
            "relaybox_queue_depth 7",
            "relaybox_blobs 0",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        connection_closed("tcp");
    }
}
