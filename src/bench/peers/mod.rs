//! The peers users would otherwise pick, driven by the same generator and measured the same
//! way as the relay ([`super::relay`]): Mosquitto (or any MQTT 3.1.1 broker) with QoS 1
//! through rumqttc in [`mqtt`](mod@mqtt), and NATS JetStream with file storage through
//! async-nats in [`nats`](mod@nats).
//!
//! This module owns what both share: the bound on a whole run, the measured window with its
//! /proc samples, open-loop pacing and the source addresses idle connections are spread over.
//! It does not start the servers under test (`tests/bench/compare.sh` does, pinned to their
//! own core) and it never reconnects: a peer that goes away ends the run with errors counted.

mod mqtt;
mod nats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::stats::{ProcSample, Report, Shared};
use super::{run_window, BenchArgs};

/// Time allowed on top of warm-up and measured window for connecting, subscribing and
/// draining; a run that takes longer is abandoned with an error.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(90);

/// Time generator tasks keep running after the measured window, so that the window's last
/// sends can still be acknowledged and delivered.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Connecting, subscribing and any other single setup step against a peer.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a finished run waits for each generator task to notice the stop.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// MQTT target (rumqttc), `addr` = `host:port`.
pub async fn mqtt(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    bounded(args, mqtt::run(addr, args)).await
}

/// NATS JetStream target (async-nats), `target` = `host:port`, optionally followed by
/// `?sync=always` when the server was started with `jetstream { sync_interval: always }`
/// (the query only changes what the report says an acknowledgement means).
pub async fn nats(target: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    bounded(args, nats::run(target, args)).await
}

/// Runs `work`, giving up once warm-up, window and [`SETUP_ALLOWANCE`] are over, so that a
/// dead or wedged peer never hangs the bench.
async fn bounded(
    args: &BenchArgs,
    work: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<Report> {
    let limit = args.warmup + args.duration + SETUP_ALLOWANCE;
    tokio::time::timeout(limit, work)
        .await
        .with_context(|| format!("the run did not finish within {limit:?}"))?
}

/// When generator tasks stop: after warm-up, window and [`DRAIN_GRACE`], from now.
fn stop_time(args: &BenchArgs) -> Instant {
    Instant::now() + args.warmup + args.duration + DRAIN_GRACE
}

/// Sleeps until `stop` (for `select!` arms that end a task).
async fn until(stop: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
}

/// Open-loop pacing of sender `i` of `senders` sharing `--rate`: one send per interval,
/// the first one after an offset, so that senders are staggered over the interval instead of
/// firing in the same instant. `None` for a closed loop.
fn pacing(args: &BenchArgs, senders: usize, i: usize) -> Option<tokio::time::Interval> {
    let rate = args.rate?;
    let n = senders.max(1);
    let every = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    let offset = every.mul_f64(i as f64 / n as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(ticker)
}

/// The source address of idle connection `i`: 127.0.0.1 ..= 127.0.0.`sources`, round robin,
/// so that many connections do not exhaust one address's ephemeral ports.
fn source_addr(i: usize, sources: u8) -> IpAddr {
    let sources = usize::from(sources.max(1));
    IpAddr::from([127, 0, 0, 1 + u8::try_from(i % sources).unwrap_or(0)])
}

/// The first IPv4 address `addr` (`host:port`) resolves to: idle connections bind IPv4
/// loopback sources.
async fn resolve_v4(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{addr} has no IPv4 address"))
}

/// Measures the window while `tasks` run, filling `report` (as the relay target does):
/// server and generator samples at the edges of the window, then the tasks are joined.
async fn measure(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: &Arc<Shared>,
    args: &BenchArgs,
    label: &str,
    report: &mut Report,
) {
    let (pid, warm) = (args.server_pid, args.warmup);
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warm).await;
        (ProcSample::take(pid), ProcSample::take(None))
    });
    let window = run_window(shared, args, label).await;
    let end = (ProcSample::take(pid), ProcSample::take(None));
    let start = sampler.await.unwrap_or((None, None));
    for t in tasks {
        if tokio::time::timeout(JOIN_TIMEOUT, t).await.is_err() {
            tracing::warn!(label, "A generator task did not stop in time.");
        }
    }
    report.finish(shared, window, (start.0, end.0), (start.1, end.1));
    if report.sent > 0 && report.acked == 0 {
        report.notes.push(
            "no send was acknowledged within the measured window: the server is overloaded, ack latency is longer than the run"
                .into(),
        );
    }
    if pid.is_none() {
        report
            .notes
            .push("no --server-pid: server CPU and memory not measured".into());
    }
}

/// Fills the idle-workload fields from server samples taken before and after `held`
/// connections were opened.
fn idle_report(
    report: &mut Report,
    held: usize,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
) {
    report.idle_connections = Some(u64::try_from(held).unwrap_or(u64::MAX));
    if let (Some(a), Some(b)) = (before, after) {
        report.server_rss_kib = Some(b.rss_kib);
        report.rss_bytes_per_idle_connection =
            Some((b.rss_kib.saturating_sub(a.rss_kib) * 1024) as f64 / held.max(1) as f64);
    } else {
        report
            .notes
            .push("no server PID: pass --server-pid to measure its memory".into());
    }
}

/// Microseconds between `began` and now.
fn micros(began: Instant) -> u64 {
    u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sources_go_round_robin_over_loopback_addresses() {
        let got: Vec<IpAddr> = (0..5).map(|i| source_addr(i, 3)).collect();
        let want: Vec<IpAddr> = [1, 2, 3, 1, 2]
            .iter()
            .map(|&d| IpAddr::from([127, 0, 0, d]))
            .collect();
        assert_eq!(got, want);
        assert_eq!(source_addr(7, 0), IpAddr::from([127, 0, 0, 1]));
    }
}
