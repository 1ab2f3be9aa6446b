//! The MQTT bridge (DESIGN.md §9): constrained devices take part in threads through the
//! site's broker. The relay is each provisioned device's end-to-end endpoint: one in-process
//! SDK [`crate::client::Client`] per device (`device`), logged in over the relay's own TCP
//! listener like any other device. This edge owns the broker connection (`poll`, the one task
//! that polls rumqttc), topic and payload parsing (`topics`, `payload`) and provisioning
//! (`provision`). It owns no messaging logic: sends, receipts and groups are the SDK's.

pub mod device;
pub mod offline;
pub mod payload;
pub mod poll;
pub mod provision;
pub mod stats;
pub mod tls;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rumqttc::{AsyncClient, MqttOptions, Transport};

use crate::config::MqttConfig;
use crate::edge::RelayCtx;
use crate::ids::Handle;
use crate::shutdown::Shutdown;
pub use stats::{BridgeStats, DropReason};

/// Requests queued between the bridge and rumqttc's event loop. Incoming QoS 1 publishes are
/// bounded by the broker's inflight window, so acks never fill this.
const REQUEST_CHANNEL: usize = 1024;
/// QoS 1 publishes the relay keeps unacknowledged at the broker.
pub const MAX_INFLIGHT: u16 = 64;

/// The largest packet MQTT 3.1.1 can express (its remaining-length field's maximum plus the
/// fixed header): what the bridge accepts from the broker.
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455 + 5;
/// The largest packet the bridge sends (a down message is one decrypted text as JSON).
const MAX_OUTGOING_PACKET_BYTES: usize = 256 * 1024;

/// rumqttc's options from the `[mqtt]` section.
pub fn options(cfg: &MqttConfig) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(cfg.clean_session)
        .set_manual_acks(true)
        .set_inflight(MAX_INFLIGHT)
        // Incoming: every packet the broker can deliver must parse, whatever its payload. A
        // publish rumqttc cannot read drops the connection before it can be acked, and the
        // persistent session redelivers it on every reconnect, which would stop the bridge for
        // every device. The broker's own `message_size_limit` bounds what arrives; payloads
        // over `mqtt.max_payload_bytes` are then dropped, counted and acked (`poll`).
        .set_max_packet_size(MQTT_MAX_PACKET_BYTES, MAX_OUTGOING_PACKET_BYTES);
    let password = if cfg.password_file.is_empty() {
        cfg.password.clone()
    } else {
        let text = std::fs::read_to_string(&cfg.password_file)
            .with_context(|| format!("reading mqtt.password_file {}", cfg.password_file))?;
        text.lines().next().unwrap_or_default().to_owned()
    };
    if !cfg.username.is_empty() {
        o.set_credentials(cfg.username.clone(), password);
    }
    if cfg.tls {
        o.set_transport(Transport::tls_with_config(tls::client_config(cfg)?));
    }
    Ok(o)
}

/// A running bridge: what the admin API needs to add and remove devices live and to report.
pub struct Bridge {
    ctx: Arc<RelayCtx>,
    relay_addr: SocketAddr,
    client: AsyncClient,
    wake: Arc<tokio::sync::Notify>,
    pub stats: Arc<BridgeStats>,
    control: tokio::sync::mpsc::UnboundedSender<poll::Control>,
    shutdown: Shutdown,
}

impl Bridge {
    /// Starts the device's task and routes its topics to it. Call on the relay's arbiter.
    pub fn attach(&self, id: Handle, threads: Vec<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let dev = device::DeviceTask {
            ctx: self.ctx.clone(),
            home: provision::home(&self.ctx.cfg.relay.data_dir, &id),
            id: id.clone(),
            relay_addr: self.relay_addr,
            mqtt: self.client.clone(),
            wake: self.wake.clone(),
            stats: self.stats.clone(),
        };
        actix_rt::spawn(dev.run(rx, self.shutdown.task()));
        let _ = self
            .control
            .send(poll::Control::Add(id, poll::Route { tx, threads }));
    }

    /// Stops routing to the device (its task ends when its channel closes).
    pub fn detach(&self, id: Handle) {
        let _ = self.control.send(poll::Control::Remove(id));
    }
}

/// Starts the bridge: joins devices to their threads, one task per device, and the poll task.
pub async fn start(
    ctx: Arc<RelayCtx>,
    relay_addr: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<Bridge>> {
    let cfg = ctx.cfg.mqtt.clone();
    let opts = options(&cfg)?;
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CHANNEL);
    let stats = Arc::new(BridgeStats::default());
    stats.outbox_set(u64::try_from(ctx.store.mqtt_outbox_len()).unwrap_or(u64::MAX));
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let bridge = Arc::new(Bridge {
        ctx: ctx.clone(),
        relay_addr,
        client: client.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        stats: stats.clone(),
        control,
        shutdown: shutdown.task(),
    });
    let devices = ctx.store.mqtt_devices()?;
    let count = devices.len();
    for (id, rec) in devices {
        let rec = provision::join_threads(&ctx, &id, rec).await;
        bridge.attach(id, rec.threads);
    }
    tracing::info!(
        broker = %format!("{}:{}", cfg.host, cfg.port),
        tls = cfg.tls,
        devices = count,
        prefix = %cfg.prefix,
        "MQTT bridge starting."
    );
    let poller = poll::Poller::new(ctx, client, bridge.wake.clone(), stats);
    actix_rt::spawn(poller.run(eventloop, control_rx, shutdown.task()));
    Ok(bridge)
}
