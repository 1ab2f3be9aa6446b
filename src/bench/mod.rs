//! `relaybox bench`: a load generator that measures throughput, latency and footprint of a
//! relay through the real protocol (Noise over TCP, end-to-end-sized envelopes, durable
//! ServerAck), and of the peers users would otherwise pick (Mosquitto over MQTT, NATS
//! JetStream) with the same generator, so ratios come from one run on one machine.
//!
//! Workloads: `pairs` (N sender→receiver pairs, closed loop with a window or open loop at a
//! rate), `group` (one sender to groups of M members), `handshake` (XX and IK logins per
//! second), `idle` (K logged-in connections held; server RSS per connection). Every run is
//! bounded by `--warmup` + `--duration` and stops by itself.
//!
//! The peers' generators ([`peers`], with async-nats) are behind the default cargo feature
//! `bench-peers`: a relay does not need them, and the .deb is built without them.

#[cfg(feature = "bench-peers")]
pub mod peers;
pub mod relay;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use stats::Report;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// N sender→receiver pairs.
    Pairs,
    /// One sender to groups of M members.
    Group,
    /// Full (XX) and resumed (IK) logins per second.
    Handshake,
    /// K idle, logged-in connections; server memory per connection.
    Idle,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "pairs")]
    pub workload: Workload,
    /// The server: `relaybox://host:port`, `mqtt://host:port` or `nats://host:port`.
    /// Without it, a relay is started on a temporary data directory (as with `--spawn`).
    #[arg(long)]
    pub target: Option<String>,
    /// Start a relay (this binary) on a temporary data directory and measure it.
    #[arg(long)]
    pub spawn: bool,
    /// For an existing relay: the directory its `command` verifier writes codes to
    /// (`{dir}/{phone}`), so that the bench can register its users.
    #[arg(long)]
    pub codes_dir: Option<PathBuf>,
    /// PID of the server under test, for its CPU and RSS (found automatically with --spawn).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Sender→receiver pairs (pairs), or groups (group).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Payload bytes per message (the end-to-end ciphertext size for relaybox).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Open loop: total offered messages per second (spread over the senders, staggered).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Group members, sender included (group).
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Connections to hold (idle) or to log in concurrently (handshake).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Source addresses 127.0.0.1 .. 127.0.0.N to spread connections over (idle).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Warm-up before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub warmup: Duration,
    /// Measured time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub duration: Duration,
    /// Write the result as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<String>,
}

/// Runs the bench; returns the process exit code.
pub fn run(args: BenchArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        let target = args
            .target
            .clone()
            .unwrap_or_else(|| "relaybox://spawn".into());
        if let Some(addr) = target.strip_prefix("mqtt://") {
            mqtt_peer(addr, &args).await
        } else if let Some(addr) = target.strip_prefix("nats://") {
            nats_peer(addr, &args).await
        } else if let Some(addr) = target.strip_prefix("relaybox://") {
            relay::run(addr, &args).await
        } else {
            anyhow::bail!(
                "--target must start with relaybox://, mqtt:// or nats://, got {target:?}"
            )
        }
    });
    match result {
        Ok(report) => {
            report.print();
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if path == "-" {
                    println!("{text}");
                } else if let Err(e) = std::fs::write(path, text) {
                    eprintln!("error: writing {path}: {e}");
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

#[cfg(feature = "bench-peers")]
async fn mqtt_peer(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    peers::mqtt(addr, args).await
}

#[cfg(feature = "bench-peers")]
async fn nats_peer(target: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    peers::nats(target, args).await
}

/// Without the peers' load generators (the .deb's build), an MQTT or NATS target is refused.
#[cfg(not(feature = "bench-peers"))]
async fn mqtt_peer(_: &str, _: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::bail!("{NO_PEERS}")
}

#[cfg(not(feature = "bench-peers"))]
async fn nats_peer(_: &str, _: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::bail!("{NO_PEERS}")
}

#[cfg(not(feature = "bench-peers"))]
const NO_PEERS: &str = "this relaybox was built without the MQTT and NATS load generators \
    (cargo feature `bench-peers`); only relaybox:// targets can be measured";

/// A progress bar over the run's duration, drawn only on a terminal.
pub fn progress(total: Duration, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total.as_secs().max(1)),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} s") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Waits out warm-up and the measured window, ticking the bar; returns the window length.
pub async fn run_window(shared: &stats::Shared, args: &BenchArgs, label: &str) -> Duration {
    let bar = progress(args.warmup + args.duration, label);
    let tick = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    while waited < args.warmup {
        tokio::time::sleep(tick.min(args.warmup - waited)).await;
        waited += tick;
        bar.inc(1);
    }
    shared
        .measuring
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    while started.elapsed() < args.duration {
        tokio::time::sleep(tick.min(args.duration.saturating_sub(started.elapsed()))).await;
        bar.inc(1);
    }
    shared
        .measuring
        .store(false, std::sync::atomic::Ordering::SeqCst);
    bar.finish_and_clear();
    started.elapsed()
}

/// The report skeleton shared by every target.
pub fn report_for(target: &str, args: &BenchArgs, ack_means: &str) -> Report {
    Report {
        target: target.to_owned(),
        workload: format!("{:?}", args.workload).to_lowercase(),
        params: serde_json::json!({
            "pairs": args.pairs, "size": args.size, "window": args.window, "rate": args.rate,
            "members": args.members, "connections": args.connections,
            "warmup_s": args.warmup.as_secs_f64(), "duration_s": args.duration.as_secs_f64(),
        }),
        ack_means: ack_means.to_owned(),
        ..Default::default()
    }
}

/// A payload of `size` bytes whose first 8 bytes are the send time (µs since `start`).
pub fn payload(size: usize, sent_us: u64) -> Vec<u8> {
    let mut p = vec![0x5a; size.max(8)];
    p[..8].copy_from_slice(&sent_us.to_be_bytes());
    p
}

/// The send time embedded by [`payload`].
pub fn sent_at(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}
