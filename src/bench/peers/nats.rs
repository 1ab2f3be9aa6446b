//! The NATS JetStream target through async-nats: publishes go to a file-storage stream
//! covering `bench.>` and are acknowledged by JetStream (the ack latency), subscribers are
//! core NATS subscriptions on the same subjects (push; end-to-end latency from the embedded
//! send time). One connection per publisher and per subscriber; async-nats sets TCP_NODELAY.
//!
//! Subscribers get a message when the server routes it, independently of JetStream storing it,
//! so end-to-end latency does not wait for the disk even with `sync_interval: always`; the
//! ack does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Subscriber};
use futures::stream::{FuturesUnordered, StreamExt as _};

use super::super::stats::{micros_since, new_histogram, ProcSample, Report, Shared};
use super::super::{payload, report_for, sent_at, BenchArgs, Workload};
use super::{
    idle_report, measure, micros, pacing, resolve_v4, source_addr, stop_time, until, DRAIN_GRACE,
    STEP_TIMEOUT,
};

const ACK_MEANS_DEFAULT: &str = "JetStream ack; file store fsyncs every 2 min by default (sync_interval), so not durable at ack";
const ACK_MEANS_SYNC: &str = "JetStream ack after fsync (sync_interval: always)";

/// The stream the bench publishes into (created, or reused and purged).
const STREAM: &str = "RELAYBOX_BENCH";
/// Subjects of [`STREAM`].
const STREAM_SUBJECTS: &str = "bench.>";
/// Bound on the stream's size, so that a long run cannot fill the disk (oldest discarded).
const STREAM_MAX_BYTES: i64 = 2 << 30;

/// Open loop: JetStream acks a publisher may await before it skips ticks.
const OPEN_LOOP_MAX_INFLIGHT: usize = 100_000;

/// Runs the chosen workload against the server at `target` (`host:port[?sync=always]`).
pub async fn run(target: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    let (addr, sync_always) = parse_target(target)?;
    let (label, ack_means) = if sync_always {
        ("nats-js-sync", ACK_MEANS_SYNC)
    } else {
        ("nats-js", ACK_MEANS_DEFAULT)
    };
    let mut report = report_for(&format!("{label} {addr}"), args, ack_means);
    match args.workload {
        Workload::Pairs => pairs(addr, args, &mut report).await?,
        Workload::Group => group(addr, args, &mut report).await?,
        Workload::Handshake => handshakes(addr, args, &mut report).await?,
        Workload::Idle => idle(addr, args, &mut report).await?,
    }
    Ok(report)
}

/// Splits `host:port[?sync=always]` into the address and whether the server fsyncs before
/// acknowledging (the query only changes the report's label).
fn parse_target(target: &str) -> anyhow::Result<(&str, bool)> {
    let (addr, query) = target.split_once('?').unwrap_or((target, ""));
    let mut sync_always = false;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv {
            "sync=always" => sync_always = true,
            "sync=default" => sync_always = false,
            other => bail!("unknown nats target option {other:?} (known: sync=always)"),
        }
    }
    Ok((addr, sync_always))
}

/// Bounded connects, no endless reconnecting to a server that went away.
fn options() -> ConnectOptions {
    ConnectOptions::new()
        .connection_timeout(STEP_TIMEOUT)
        .request_timeout(Some(STEP_TIMEOUT))
        .max_reconnects(1)
}

/// Connects one client (CONNECT, then PING answered by PONG).
async fn connect(addr: &str, opts: ConnectOptions) -> anyhow::Result<Client> {
    tokio::time::timeout(STEP_TIMEOUT, opts.connect(addr))
        .await
        .with_context(|| format!("connecting to nats {addr} timed out"))?
        .with_context(|| format!("connecting to nats {addr}"))
}

/// Creates the file-storage stream over `bench.>` (or reuses it) and empties it.
async fn prepare_stream(addr: &str) -> anyhow::Result<Client> {
    let admin = connect(addr, options()).await?;
    let js = jetstream::new(admin.clone());
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![STREAM_SUBJECTS.into()],
        storage: stream::StorageType::File,
        max_bytes: STREAM_MAX_BYTES,
        ..Default::default()
    };
    let s = tokio::time::timeout(STEP_TIMEOUT, js.get_or_create_stream(config))
        .await
        .context("creating the JetStream stream timed out")?
        .context("creating the JetStream stream (is JetStream enabled: -js?)")?;
    tokio::time::timeout(
        STEP_TIMEOUT,
        std::future::IntoFuture::into_future(s.purge()),
    )
    .await
    .context("purging the JetStream stream timed out")?
    .context("purging the JetStream stream")?;
    Ok(admin)
}

/// Subscribes a new connection to `subject`; returns once the server has the subscription.
async fn subscriber(addr: &str, subject: String) -> anyhow::Result<(Client, Subscriber)> {
    let client = connect(addr, options()).await?;
    let sub = client.subscribe(subject).await.context("subscribing")?;
    tokio::time::timeout(STEP_TIMEOUT, client.flush())
        .await
        .context("flushing a subscription timed out")?
        .context("flushing a subscription")?;
    Ok((client, sub))
}

/// Receives until `stop`, recording end-to-end latency.
async fn receive(client: Client, mut sub: Subscriber, shared: Arc<Shared>, stop: Instant) {
    let mut e2e = new_histogram();
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = until(stop) => break,
        };
        match msg {
            Some(m) => {
                if let Some(t) = sent_at(&m.payload) {
                    let now = micros_since(shared.start);
                    shared.record_delivery(&mut e2e, now.saturating_sub(t));
                }
            }
            None => {
                tracing::debug!("NATS subscription ended.");
                shared.count_error();
                break;
            }
        }
    }
    drop(client);
    shared.merge(&new_histogram(), &e2e);
}

/// A publish's send time and JetStream's answer.
async fn acked(sent: u64, ack: PublishAckFuture) -> (u64, Result<PublishAck, PublishError>) {
    (sent, ack.await)
}

/// Records a finished publish: ack latency, or an error.
fn on_ack(
    shared: &Shared,
    hist: &mut hdrhistogram::Histogram<u64>,
    (sent, answer): (u64, Result<PublishAck, PublishError>),
) {
    match answer {
        Ok(_) => shared.record_ack(hist, micros_since(shared.start).saturating_sub(sent)),
        Err(e) => {
            tracing::debug!(error = %e, "JetStream publish not acknowledged.");
            shared.count_error();
        }
    }
}

/// Publishes to `subject` until `stop`: closed loop (`ticker` = `None`, at most `window` acks
/// awaited) or open loop (one publish per tick, acks awaited alongside).
async fn publish(
    js: jetstream::Context,
    subject: String,
    mut ticker: Option<tokio::time::Interval>,
    window: usize,
    size: usize,
    shared: Arc<Shared>,
    stop: Instant,
) {
    let mut hist = new_histogram();
    let mut inflight = FuturesUnordered::new();
    loop {
        let send = match ticker.as_mut() {
            None if inflight.len() < window.max(1) => true,
            // The window is full (so not empty): wait for an ack.
            None => tokio::select! {
                Some(done) = inflight.next() => { on_ack(&shared, &mut hist, done); false }
                _ = until(stop) => break,
            },
            Some(tick) => tokio::select! {
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    on_ack(&shared, &mut hist, done);
                    false
                }
                _ = tick.tick() => inflight.len() < OPEN_LOOP_MAX_INFLIGHT,
                _ = until(stop) => break,
            },
        };
        if !send {
            continue;
        }
        let t = micros_since(shared.start);
        let sending = js.publish(subject.clone(), payload(size, t).into());
        let result = tokio::select! {
            r = sending => r,
            _ = until(stop) => break,
        };
        match result {
            Ok(ack) => {
                inflight.push(acked(t, ack));
                shared.count_sent();
            }
            Err(e) => {
                tracing::debug!(error = %e, "NATS publish failed.");
                shared.count_error();
                break;
            }
        }
    }
    shared.merge(&hist, &new_histogram());
}

/// Connects a publisher (its own connection and JetStream context). Its acks may take as
/// long as the run: a lagging server shows as ack latency, not as timed-out publishes.
async fn publisher(addr: &str, args: &BenchArgs) -> anyhow::Result<jetstream::Context> {
    let client = connect(addr, options()).await?;
    let inflight = if args.rate.is_some() {
        OPEN_LOOP_MAX_INFLIGHT
    } else {
        args.window.max(1)
    };
    Ok(jetstream::ContextBuilder::new()
        .timeout(args.warmup + args.duration + DRAIN_GRACE + STEP_TIMEOUT)
        .max_ack_inflight(inflight)
        .build(client))
}

/// N publisher→subscriber pairs, subject `bench.{i}` per pair.
async fn pairs(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let n = args.pairs.max(1);
    let _admin = prepare_stream(addr).await?;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let subject = format!("bench.{i}");
        let sub = subscriber(addr, subject.clone()).await?;
        clients.push((sub, publisher(addr, args).await?, subject));
    }
    // Everything is connected: the run's clock starts now.
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(2 * n);
    for (i, ((client, sub), js, subject)) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(receive(client, sub, shared.clone(), stop)));
        let sending = publish(
            js,
            subject,
            pacing(args, n, i),
            args.window,
            args.size,
            shared.clone(),
            stop,
        );
        tasks.push(tokio::spawn(sending));
    }
    measure(tasks, &shared, args, "nats pairs", report).await;
    Ok(())
}

/// One publisher to M-1 subscribers of `bench.group` (deliveries counted).
async fn group(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let m = args.members.max(2);
    let subject = "bench.group";
    let _admin = prepare_stream(addr).await?;
    let mut subs = Vec::with_capacity(m - 1);
    for _ in 1..m {
        subs.push(subscriber(addr, subject.into()).await?);
    }
    let js = publisher(addr, args).await?;
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(m);
    for (client, sub) in subs {
        tasks.push(tokio::spawn(receive(client, sub, shared.clone(), stop)));
    }
    let sending = publish(
        js,
        subject.into(),
        pacing(args, 1, 0),
        args.window,
        args.size,
        shared.clone(),
        stop,
    );
    tasks.push(tokio::spawn(sending));
    measure(tasks, &shared, args, "nats group", report).await;
    report.notes.push(format!(
        "fan-out to {} core-NATS subscribers per message (deliveries counted); one JetStream copy stored",
        m - 1
    ));
    Ok(())
}

/// Connections per second (CONNECT, then the first PING answered by PONG) with
/// `min(connections, 64)` workers, each connecting and closing in turn.
async fn handshakes(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let workers = args.connections.clamp(1, 64);
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (addr, shared) = (addr.to_owned(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = new_histogram();
            while Instant::now() < stop {
                let began = Instant::now();
                match connect(&addr, options()).await {
                    // Dropping the last handle closes the connection.
                    Ok(client) => {
                        shared.record_delivery(&mut lat, micros(began));
                        drop(client);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "NATS connect failed.");
                        shared.count_error();
                        // A refusing server is not hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            shared.merge(&new_histogram(), &lat);
        }));
    }
    measure(tasks, &shared, args, "nats connects", report).await;
    report.handshakes_per_s = Some(report.delivered_per_s);
    report.notes.push(format!(
        "connect (INFO, CONNECT, PING/PONG; plain TCP, no TLS), {workers} concurrent workers; e2e latency = connect time; CPU/msg = CPU per connection"
    ));
    Ok(())
}

/// Holds K connected clients spread over the source addresses; server RSS per connection.
async fn idle(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let k = args.connections.max(1);
    let server = resolve_v4(addr).await?.to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::take(args.server_pid);
    let mut held = Vec::with_capacity(k);
    for i in 0..k {
        let src = source_addr(i, args.sources);
        let opts = options().local_address(SocketAddr::new(src, 0));
        held.push(
            connect(&server, opts)
                .await
                .with_context(|| format!("idle connection {i} from {src}"))?,
        );
    }
    tokio::time::sleep(args.warmup.max(Duration::from_secs(1))).await;
    let after = ProcSample::take(args.server_pid);
    idle_report(report, held.len(), before, after);
    report
        .notes
        .push("idle clients: async-nats connections, no subscriptions".into());
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_query_changes_only_the_label() {
        let (addr, sync) = parse_target("127.0.0.1:4222?sync=always").expect("valid target");
        assert_eq!((addr, sync), ("127.0.0.1:4222", true));
        let (addr, sync) = parse_target("127.0.0.1:4222").expect("valid target");
        assert_eq!((addr, sync), ("127.0.0.1:4222", false));
    }

    #[test]
    fn an_unknown_query_is_refused() {
        assert!(parse_target("127.0.0.1:4222?fsync=yes").is_err());
    }
}
