//! The MQTT target (Mosquitto in the comparison) through rumqttc: QoS 1 PUBLISH acknowledged
//! by PUBACK, QoS 1 clean-session subscribers, one client (one TCP connection, TCP_NODELAY)
//! per publisher and per subscriber, exactly one task polling each client's event loop.
//!
//! Ack latency runs from the embedded send time to the PUBACK: the publishing task queues each
//! send time, and the event loop task pairs it with the packet id rumqttc assigns when the
//! PUBLISH goes out (requests are handled in order), then with the PUBACK of that id.
//! The `idle` and `handshake` workloads use a minimal client of our own (TCP, CONNECT,
//! CONNACK): rumqttc cannot bind a source address, and its per-client setup kept the generator
//! busier than the broker in a connection storm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, Semaphore};

use super::super::stats::{micros_since, new_histogram, ProcSample, Report, Shared};
use super::super::{payload, report_for, sent_at, BenchArgs, Workload};
use super::{
    idle_report, measure, micros, pacing, resolve_v4, source_addr, stop_time, until, STEP_TIMEOUT,
};

const ACK_MEANS: &str =
    "PUBACK; Mosquitto persists to disk only periodically (autosave), so not durable at ack";

/// Open loop: PUBLISHes a client may have unacknowledged before rumqttc holds back more.
const OPEN_LOOP_INFLIGHT: u16 = 1024;

/// Keep-alive of every client: longer than any hold, so idle connections need no PINGREQ.
const KEEP_ALIVE: Duration = Duration::from_secs(300);

/// Where and how to connect.
#[derive(Clone)]
struct Broker {
    host: String,
    port: u16,
    /// Largest packet either way, bytes.
    max_packet_bytes: usize,
    /// Makes client ids unique across bench processes sharing a broker.
    run_id: u32,
}

impl Broker {
    /// Options of a clean-session client `id` allowing `inflight` unacknowledged PUBLISHes.
    fn options(&self, id: &str, inflight: u16) -> MqttOptions {
        let mut o = MqttOptions::new(format!("rb{}-{id}", self.run_id), &self.host, self.port);
        o.set_clean_session(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(inflight.max(1))
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        o
    }
}

/// TCP_NODELAY on (rumqttc leaves it off) and a bounded connect.
fn network_options() -> NetworkOptions {
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(STEP_TIMEOUT.as_secs());
    n
}

/// Runs the chosen workload against the broker at `addr` (`host:port`).
pub async fn run(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("mqtt target {addr:?} is not host:port"))?;
    let broker = Broker {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: port
            .parse()
            .with_context(|| format!("mqtt target {addr:?}: bad port"))?,
        max_packet_bytes: (args.size + 1024).max(10 * 1024),
        run_id: std::process::id(),
    };
    let mut report = report_for(&format!("mqtt {addr}"), args, ACK_MEANS);
    match args.workload {
        Workload::Pairs => pairs(&broker, args, &mut report).await?,
        Workload::Group => group(&broker, args, &mut report).await?,
        Workload::Handshake => handshakes(addr, args, &mut report).await?,
        Workload::Idle => idle(addr, args, &mut report).await?,
    }
    report
        .notes
        .push("MQTT 3.1.1 over plain TCP, QoS 1, clean sessions".into());
    Ok(report)
}

/// Connects client `id`; returns once the broker's CONNACK accepted it.
async fn connect(
    broker: &Broker,
    id: &str,
    inflight: u16,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    // Enough room for a closed loop's window; an open loop waits here when the broker lags.
    let cap = usize::from(inflight) + 16;
    let (client, mut events) = AsyncClient::new(broker.options(id, inflight), cap);
    events.set_network_options(network_options());
    match tokio::time::timeout(STEP_TIMEOUT, events.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok((client, events)),
        Ok(Ok(other)) => bail!("expected CONNACK, got {other:?}"),
        Ok(Err(e)) => Err(e).with_context(|| format!("connecting {id}")),
        Err(_) => bail!("no CONNACK for {id} within {STEP_TIMEOUT:?}"),
    }
}

/// Connects a subscriber of `topic` at QoS 1; returns once the SUBACK granted it.
async fn subscriber(
    broker: &Broker,
    id: &str,
    topic: &str,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut events) = connect(broker, id, 16).await?;
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .with_context(|| format!("subscribing {id}"))?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                ensure!(
                    ack.return_codes
                        .iter()
                        .all(|c| !matches!(c, SubscribeReasonCode::Failure)),
                    "the broker refused {id}'s subscription to {topic}"
                );
                return Ok((client, events));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e).with_context(|| format!("subscribing {id}")),
            Err(_) => bail!("no SUBACK for {id} within {STEP_TIMEOUT:?}"),
        }
    }
}

/// Polls a subscriber's event loop until `stop`, recording end-to-end latency of every
/// PUBLISH delivered (rumqttc acknowledges them).
async fn receive(client: AsyncClient, mut events: EventLoop, shared: Arc<Shared>, stop: Instant) {
    let mut e2e = new_histogram();
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = until(stop) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(t) = sent_at(&p.payload) {
                    let now = micros_since(shared.start);
                    shared.record_delivery(&mut e2e, now.saturating_sub(t));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "MQTT subscriber lost its connection.");
                shared.count_error();
                break;
            }
        }
    }
    drop(client);
    shared.merge(&new_histogram(), &e2e);
}

/// What a publisher's two tasks share.
struct Publisher {
    client: AsyncClient,
    topic: String,
    /// Closed loop: free places in the window (released on PUBACK). Open loop: `None`.
    window: Option<Arc<Semaphore>>,
}

/// Publishes until `stop`, closed loop (`ticker` = `None`, at most the window unacknowledged)
/// or open loop (one PUBLISH per tick); queues each send time for [`publisher_events`].
async fn publish(
    p: Arc<Publisher>,
    sent: mpsc::UnboundedSender<u64>,
    mut ticker: Option<tokio::time::Interval>,
    size: usize,
    shared: Arc<Shared>,
    stop: Instant,
) {
    loop {
        let ready = async {
            match (&mut ticker, &p.window) {
                (Some(t), _) => {
                    t.tick().await;
                    true
                }
                (None, Some(w)) => match w.acquire().await {
                    Ok(permit) => {
                        // Given back by the event loop task on PUBACK.
                        permit.forget();
                        true
                    }
                    Err(_) => false,
                },
                (None, None) => false,
            }
        };
        let ready = tokio::select! {
            r = ready => r,
            _ = until(stop) => break,
        };
        if !ready {
            break;
        }
        let t = micros_since(shared.start);
        if sent.send(t).is_err() {
            break;
        }
        let sending = p
            .client
            .publish(p.topic.as_str(), QoS::AtLeastOnce, false, payload(size, t));
        let result = tokio::select! {
            r = sending => r,
            _ = until(stop) => break,
        };
        if result.is_err() {
            shared.count_error();
            break;
        }
        shared.count_sent();
    }
}

/// Polls a publisher's event loop until `stop`: pairs send times with packet ids, records
/// PUBACK latency and frees window places.
async fn publisher_events(
    p: Arc<Publisher>,
    mut events: EventLoop,
    mut sent: mpsc::UnboundedReceiver<u64>,
    shared: Arc<Shared>,
    stop: Instant,
) {
    let mut ack = new_histogram();
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = until(stop) => break,
        };
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Ok(t) = sent.try_recv() {
                    inflight.insert(pkid, t);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if let Some(t) = inflight.remove(&a.pkid) {
                    let now = micros_since(shared.start);
                    shared.record_ack(&mut ack, now.saturating_sub(t));
                }
                if let Some(w) = &p.window {
                    w.add_permits(1);
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                tracing::debug!(error = %e, topic = %p.topic, "MQTT publisher lost its connection.");
                shared.count_error();
                break;
            }
        }
    }
    if let Some(w) = &p.window {
        // Wakes a publishing task still waiting for a place.
        w.close();
    }
    shared.merge(&ack, &new_histogram());
}

/// Connects a publisher on `topic`, open loop (`open`) or closed loop with the window.
async fn connect_publisher(
    broker: &Broker,
    id: &str,
    topic: String,
    open: bool,
    args: &BenchArgs,
) -> anyhow::Result<(Arc<Publisher>, EventLoop)> {
    let window = u16::try_from(args.window.max(1)).unwrap_or(u16::MAX - 1);
    let inflight = if open { OPEN_LOOP_INFLIGHT } else { window };
    let (client, events) = connect(broker, id, inflight).await?;
    let window = (!open).then(|| Arc::new(Semaphore::new(usize::from(window))));
    let p = Publisher {
        client,
        topic,
        window,
    };
    Ok((Arc::new(p), events))
}

/// Starts a connected publisher's two tasks.
fn spawn_publisher(
    (p, events): (Arc<Publisher>, EventLoop),
    ticker: Option<tokio::time::Interval>,
    args: &BenchArgs,
    shared: &Arc<Shared>,
    stop: Instant,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = publisher_events(p.clone(), events, rx, shared.clone(), stop);
    tasks.push(tokio::spawn(events));
    let publishing = publish(p, tx, ticker, args.size, shared.clone(), stop);
    tasks.push(tokio::spawn(publishing));
}

/// N publisher→subscriber pairs, topic `bench/{i}` per pair.
async fn pairs(broker: &Broker, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let n = args.pairs.max(1);
    let open = args.rate.is_some();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let topic = format!("bench/{i}");
        let sub = subscriber(broker, &format!("sub{i}"), &topic).await?;
        let publisher = connect_publisher(broker, &format!("pub{i}"), topic, open, args).await?;
        clients.push((sub, publisher));
    }
    // Everything is connected: the run's clock starts now.
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(3 * n);
    for (i, ((client, events), publisher)) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(receive(client, events, shared.clone(), stop)));
        spawn_publisher(
            publisher,
            pacing(args, n, i),
            args,
            &shared,
            stop,
            &mut tasks,
        );
    }
    measure(tasks, &shared, args, "mqtt pairs", report).await;
    Ok(())
}

/// One publisher to M-1 subscribers of `bench/group` (deliveries counted).
async fn group(broker: &Broker, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let m = args.members.max(2);
    let topic = "bench/group";
    let mut subs = Vec::with_capacity(m - 1);
    for i in 1..m {
        subs.push(subscriber(broker, &format!("member{i}"), topic).await?);
    }
    let open = args.rate.is_some();
    let publisher = connect_publisher(broker, "sender", topic.into(), open, args).await?;
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(m + 1);
    for (client, events) in subs {
        tasks.push(tokio::spawn(receive(client, events, shared.clone(), stop)));
    }
    spawn_publisher(
        publisher,
        pacing(args, 1, 0),
        args,
        &shared,
        stop,
        &mut tasks,
    );
    measure(tasks, &shared, args, "mqtt group", report).await;
    report.notes.push(format!(
        "fan-out to {} subscribers per message (deliveries counted)",
        m - 1
    ));
    Ok(())
}

/// Connect + CONNACK per second with `min(connections, 64)` workers, each connecting,
/// waiting for CONNACK and closing in turn.
///
/// The clients are minimal (the same CONNECT as rumqttc sends, see [`connect_packet`]) and close
/// with a reset (SO_LINGER 0): on loopback, rumqttc's per-client setup and the kernel's search
/// for a free port among thousands in TIME_WAIT kept the generator above 90% CPU while the
/// broker idled, which measured the generator, not the broker.
async fn handshakes(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let workers = args.connections.clamp(1, 64);
    let server = resolve_v4(addr).await?;
    let run_id = std::process::id();
    let shared = Shared::new();
    let stop = stop_time(args);
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = new_histogram();
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let began = Instant::now();
                let id = format!("rb{run_id}-hs{w}-{n}");
                match tokio::time::timeout(STEP_TIMEOUT, raw_connect(server, None, &id)).await {
                    Ok(Ok(s)) => {
                        shared.record_delivery(&mut lat, micros(began));
                        // Dropped with a reset: no TIME_WAIT left behind.
                        let _ = s.set_zero_linger();
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "MQTT connect failed.");
                        shared.count_error();
                        // A refusing broker is not hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => shared.count_error(),
                }
            }
            shared.merge(&new_histogram(), &lat);
        }));
    }
    measure(tasks, &shared, args, "mqtt connects", report).await;
    report.handshakes_per_s = Some(report.delivered_per_s);
    report.notes.push(format!(
        "connect + CONNECT/CONNACK (plain TCP, no TLS; minimal client, closed with a reset), {workers} concurrent workers; e2e latency = connect time; CPU/msg = CPU per connection"
    ));
    Ok(())
}

/// An MQTT 3.1.1 CONNECT for a clean session.
///
/// # Format
///
/// Fixed header `0x10`, remaining length (one byte: the packet stays under 128 bytes); variable
/// header: protocol name `"MQTT"` (u16 length + bytes), level 4, flags `0x02` (clean session),
/// keep-alive (u16 seconds); payload: client id (u16 length + bytes).
fn connect_packet(client_id: &str) -> anyhow::Result<Vec<u8>> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).context("client id too long")?;
    let keep_alive = u16::try_from(KEEP_ALIVE.as_secs()).unwrap_or(u16::MAX);
    let remaining = u8::try_from(10 + 2 + id.len())
        .ok()
        .filter(|&r| r < 128)
        .context("client id too long for a one-byte remaining length")?;
    let mut p = vec![0x10, remaining, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    p.extend_from_slice(&keep_alive.to_be_bytes());
    p.extend_from_slice(&id_len.to_be_bytes());
    p.extend_from_slice(id);
    Ok(p)
}

/// Opens one connection (from `src`, or from any loopback port) and completes CONNECT /
/// CONNACK.
async fn raw_connect(
    server: SocketAddr,
    src: Option<std::net::IpAddr>,
    id: &str,
) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_nodelay(true)?;
    if let Some(src) = src {
        socket
            .bind(SocketAddr::new(src, 0))
            .with_context(|| format!("binding {src}"))?;
    }
    let mut s = tokio::time::timeout(STEP_TIMEOUT, socket.connect(server))
        .await
        .context("connect timed out")??;
    s.write_all(&connect_packet(id)?).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut connack))
        .await
        .context("no CONNACK in time")??;
    ensure!(
        connack[0] == 0x20 && connack[1] == 2 && connack[3] == 0,
        "CONNACK refused: {connack:02x?}"
    );
    Ok(s)
}

/// Holds K connected clients spread over the source addresses; server RSS per connection.
async fn idle(addr: &str, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let k = args.connections.max(1);
    let server = resolve_v4(addr).await?;
    let run_id = std::process::id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::take(args.server_pid);
    let mut held = Vec::with_capacity(k);
    for i in 0..k {
        let src = source_addr(i, args.sources);
        let id = format!("rb{run_id}-idle{i}");
        held.push(
            raw_connect(server, Some(src), &id)
                .await
                .with_context(|| format!("idle connection {i} from {src}"))?,
        );
    }
    tokio::time::sleep(args.warmup.max(Duration::from_secs(1))).await;
    let after = ProcSample::take(args.server_pid);
    idle_report(report, held.len(), before, after);
    report.notes.push(
        "idle clients: raw TCP with a minimal CONNECT (rumqttc cannot bind a source address), no subscriptions"
            .into(),
    );
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_a_valid_mqtt_311_connect() {
        let p = connect_packet("abc").expect("short id");
        assert_eq!(
            p,
            vec![0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 1, 44, 0, 3, b'a', b'b', b'c']
        );
        assert_eq!(usize::from(p[1]), p.len() - 2);
    }

    #[test]
    fn connect_packet_refuses_ids_that_need_a_longer_length() {
        assert!(connect_packet(&"x".repeat(200)).is_err());
    }
}
