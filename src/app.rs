//! `relaybox serve`: the one place that wires the store, the actors and the edges together,
//! and runs them until a signal asks the relay to stop.
//!
//! # Thread model (as it is; sharding over the cores is still to come)
//!
//! - The actix system arbiter (the thread that runs [`serve`]) runs the Noise TCP listener and
//!   every TCP session, the MQTT bridge, the Device, Thread, Entity and Presence actors started
//!   from them, the durability barrier's group-commit task, the message log's commit
//!   dispatcher (which wakes the device actors that got entries), the retention sweep, and
//!   the abuse metrics' write-back.
//! - actix-web runs the HTTP listener (WebSocket and chunked-HTTP sessions, blob transfers) on
//!   its own workers, one per core, and the admin API on one more. An actor is started on the
//!   thread that first looks it up through the `Directory`, which may be an HTTP worker.
//! - The abuse monitor runs on an arbiter of its own.
//! - The message log's writer thread does its writes and fdatasyncs; its retirement thread
//!   moves what closed segments still hold into sled (`store::msglog`). Appends happen on the
//!   caller's thread.
//! - sled runs its own flusher thread; the barrier's fdatasync, push deliveries and verifier
//!   commands run on tokio's blocking pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use crate::actors::abuse::AbuseMonitor;
use crate::actors::device::DeviceSettings;
use crate::actors::notifier::Notifier;
use crate::actors::presence::Presence;
use crate::actors::Directory;
use crate::config::{to_usize, Config, Verifier as VerifierKind};
use crate::edge::context::Limiters;
use crate::edge::limits::Admission;
use crate::edge::{admin, http, tcp, RelayCtx};
use crate::files::{create_private_dir, load_or_create_key, RELAY_KEY_FILE};
use crate::registration::ratelimit::RateLimiter;
use crate::registration::verifier::Verifier;
use crate::shutdown::ShutdownController;
use crate::store::Store;
use crate::wire::token::TokenKey;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// Runs the relay until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.relay.data_dir.clone();
    create_private_dir(&data_dir)?;
    let identity = load_or_create_key(&data_dir.join(RELAY_KEY_FILE))?;
    let store = Store::open_with_cache(&data_dir, cfg.relay.store_cache_bytes)
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    let listener = tcp::bind(cfg.listen.tcp)
        .await
        .with_context(|| format!("binding {}", cfg.listen.tcp))?;
    let tcp_addr = listener.local_addr()?;
    let admin_listener = admin::bind(cfg.listen.admin)
        .with_context(|| format!("binding the admin API on {}", cfg.listen.admin))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_token = admin::AdminToken::load_or_create(&data_dir.join(admin::token::TOKEN_FILE))?;
    let audit = Arc::new(
        crate::audit::AuditLog::open(&data_dir, (&cfg.audit).into()).with_context(|| {
            format!(
                "opening {}",
                data_dir.join(crate::audit::AUDIT_FILE).display()
            )
        })?,
    );
    crate::telemetry::metrics::started();

    store.set_min_free_disk_bytes(cfg.relay.min_free_disk_bytes);
    let durability = store
        .durability()
        .with_context(|| format!("opening {} for the durability barrier", data_dir.display()))?;
    let settings = DeviceSettings {
        window: to_usize(cfg.messaging.delivery_window),
        idle_stop: cfg.sessions.device_idle_stop,
    };
    let push_relay = if cfg.push.relay_address.is_empty() {
        tcp_addr.to_string()
    } else {
        cfg.push.relay_address.clone()
    };
    let push_policy = Arc::new(crate::actors::push_target::PushPolicy::new(
        &cfg.push.allowed_hosts,
        vec![tcp_addr, admin_addr, cfg.listen.http],
    ));
    let notifier = Notifier::spawn(store.clone(), push_relay, push_policy.clone());
    let directory = Directory::new(store.clone(), settings, notifier);
    // The commit dispatcher: one wake per log commit, one `Durable` per device that got
    // entries in it.
    let mut commits = store.log().commits();
    let dispatch = directory.clone();
    actix::spawn(async move {
        while let Some(c) = commits.recv().await {
            dispatch.durable(c.upto, &c.devices);
        }
    });
    let (controller, shutdown) = ShutdownController::new();
    let reg = &cfg.registration;
    let limits = Limiters {
        codes_per_number: RateLimiter::new(reg.codes_per_number_per_hour, HOUR),
        codes_per_address: RateLimiter::new(reg.codes_per_address_per_hour, HOUR),
        registrations_per_address: RateLimiter::new(reg.registrations_per_address_per_hour, HOUR),
        sends_per_account: RateLimiter::new(cfg.abuse.sends_per_minute, MINUTE),
        new_conversations_per_account: RateLimiter::new(
            cfg.abuse.new_conversations_per_minute,
            MINUTE,
        ),
        contact_lookups_per_account: RateLimiter::new(
            cfg.limits.contact_lookups_per_hour_per_account,
            HOUR,
        ),
        contact_lookups_per_ip: RateLimiter::new(cfg.limits.contact_lookups_per_hour_per_ip, HOUR),
        claims_per_account: RateLimiter::new(cfg.keys.claims_per_account_per_hour, HOUR),
        one_time_claims_per_device: RateLimiter::new(
            cfg.keys.one_time_claims_per_device_per_hour,
            HOUR,
        ),
        claim_pairs: RateLimiter::new(1, 24 * HOUR),
        keys_low_warnings: RateLimiter::new(1, HOUR),
    };
    let admission = Admission::new(
        to_usize(cfg.limits.max_connections),
        to_usize(cfg.limits.max_connections_per_ip),
        cfg.limits.handshakes_per_second_per_ip,
    );
    let ctx = Arc::new(RelayCtx {
        verifier: verifier_of(&cfg),
        identity: identity.clone(),
        tokens: TokenKey(store.secret("token_key")?),
        code_secret: store.secret("code_hmac_key")?,
        store: store.clone(),
        durability,
        directory,
        limits: Mutex::new(limits),
        presence: Presence::default(),
        shutdown: shutdown.listener(),
        audit,
        push_policy,
        blobs: crate::blob::Blobs {
            files: crate::blob::BlobFiles::open(&data_dir)
                .with_context(|| format!("opening {}", data_dir.join("blobs").display()))?,
            url_key: store.secret("blob_url_key")?,
        },
        cfg,
    });

    // Bound before the relay reports ready: a busy port or a bad certificate fails the start.
    let http_server = http::bind(ctx.clone(), admission.clone(), &shutdown)
        .with_context(|| "starting the HTTP listener".to_owned())?;
    let http_addr = http_server.local_addr();
    ctx.push_policy.add_own(http_addr);
    actix_rt::spawn(tcp::serve(
        ctx.clone(),
        listener,
        admission,
        shutdown.task(),
    ));
    let http_server = http_server.run();
    actix_rt::spawn(sweep(ctx.clone(), shutdown.task()));
    actix_rt::spawn(abuse_write_back(store.clone(), shutdown.task()));
    actix_rt::spawn(crate::blob::gc::run(
        store.clone(),
        ctx.blobs.files.clone(),
        ctx.cfg.blobs.clone(),
        shutdown.task(),
    ));
    let mqtt = if ctx.cfg.mqtt.enabled {
        let bridge = crate::edge::mqtt::start(ctx.clone(), tcp_addr, &shutdown)
            .await
            .context("starting the MQTT bridge")?;
        Some(bridge)
    } else {
        None
    };
    let watchdog = actix_rt::spawn(watchdog());
    let abuse_monitor = ctx.cfg.abuse.enabled.then(|| {
        AbuseMonitor::new(store.clone(), ctx.cfg.abuse.clone(), ctx.audit.clone()).spawn()
    });
    let admin_state = Arc::new(admin::AdminState {
        ctx: ctx.clone(),
        token: admin_token,
        started: std::time::Instant::now(),
        data_dir: data_dir.clone(),
        relay: actix_rt::Arbiter::current(),
        ready: false.into(),
        mqtt,
    });
    let admin_server =
        admin::server(admin_state.clone(), admin_listener).context("starting the admin API")?;
    let admin_handle = admin_server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = admin_server.await {
            tracing::error!(error = %e, "The admin API stopped.");
        }
    });
    admin_state.set_ready();

    tracing::info!(
        tcp = %tcp_addr,
        http = %http_addr,
        tls = ctx.cfg.tls.enabled(),
        admin = %admin_addr,
        data_dir = %data_dir.display(),
        relay_key = %hex::encode(identity.public),
        version = env!("CARGO_PKG_VERSION"),
        "Relay ready."
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    wait_for_signal().await;
    tracing::info!(grace = ?ctx.cfg.relay.shutdown_grace, "Shutting down.");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let grace = ctx.cfg.relay.shutdown_grace;
    drop(shutdown);
    if !controller.shutdown(grace).await {
        tracing::warn!("Grace period ended with sessions still open; closing them.");
    }
    http_server.stop().await;
    watchdog.abort();
    if let Some(a) = abuse_monitor {
        a.stop();
    }
    // Last, so that /readyz answers 503 while sessions drain.
    admin_handle.stop(true).await;
    store.flush().context("final flush")?;
    tracing::info!("Relay stopped.");
    Ok(())
}

fn verifier_of(cfg: &Config) -> Verifier {
    let reg = &cfg.registration;
    match reg.verifier {
        VerifierKind::Command => Verifier::Command {
            argv: reg.command.clone(),
        },
        VerifierKind::Webhook => Verifier::Webhook {
            url: reg.webhook_url.clone(),
        },
        VerifierKind::Log => Verifier::Log,
    }
}

/// Deletes undelivered messages and codes past their retention, periodically.
async fn sweep(ctx: Arc<RelayCtx>, mut stop: crate::shutdown::Shutdown) {
    let mut every = tokio::time::interval(ctx.cfg.messaging.sweep_interval);
    let retention = u64::try_from(ctx.cfg.messaging.retention.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.recv() => return,
        }
        let now = crate::clock::now_ms();
        match ctx.store.queue_sweep(now.saturating_sub(retention)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "Undelivered messages past retention deleted."),
            Err(e) => tracing::error!(error = %e, "Retention sweep failed."),
        }
        if let Err(e) = ctx.store.code_sweep(now) {
            tracing::error!(error = %e, "Code sweep failed.");
        }
        // A broker redelivers within a session's life, far inside the retention period.
        if let Err(e) = ctx.store.mqtt_up_sweep(now.saturating_sub(retention)) {
            tracing::error!(error = %e, "MQTT dedup sweep failed.");
        }
    }
}

/// Writes the abuse metrics counted in memory back to sled every half second (`store::abuse`);
/// shutdown's flush writes the last of them.
async fn abuse_write_back(store: Store, mut stop: crate::shutdown::Shutdown) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.recv() => return,
        }
        if let Err(e) = store.abuse_stats_flush() {
            tracing::error!(error = %e, "Writing the abuse metrics back failed.");
        }
    }
}

/// Pings systemd's watchdog at half its interval, when it is enabled.
async fn watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        every.tick().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("Signal handlers unavailable; stop with SIGKILL.");
            std::future::pending::<()>().await;
        }
    }
}
