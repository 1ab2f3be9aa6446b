//! The relaybox target: registers bench users through the real protocol, then drives the
//! workloads over Noise/TCP with pipelined requests and end-to-end-sized envelopes. The
//! envelopes are random bytes of the ciphertext size (the relay cannot tell the difference,
//! and the generator is spared Olm), carrying the send time for end-to-end latency.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::RngCore;

use super::stats::{micros_since, new_histogram, ProcSample, Report, Shared};
use super::{payload, report_for, run_window, sent_at, BenchArgs, Workload};
use crate::client::connection::{Connection, Identity};
use crate::wire::handshake::StaticKeypair;
use crate::wire::messages::{
    client_frame, server_frame, Ack, CreateGroup, Envelope, GroupInfo, RequestCode, Send,
    VerifyCode,
};

const ACK_MEANS: &str = "ServerAck after the group-committed fsync (durable)";

/// A relay started by the bench; stopped (SIGTERM, then SIGKILL) when dropped.
struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this binary as a relay with a command verifier and limits opened for load.
fn spawn_relay() -> anyhow::Result<(Spawned, String, u32, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let codes = dir.path().join("codes");
    std::fs::create_dir_all(&codes)?;
    let cfg = format!(
        "[relay]\ndata_dir = \"{data}\"\n\n[listen]\ntcp = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
         [limits]\nmax_connections = 200000\nmax_connections_per_ip = 200000\n\
         handshakes_per_second_per_ip = 1000000\nframes_per_second_per_device = 1000000\n\n\
         [registration]\nverifier = \"command\"\ncodes_per_address_per_hour = 1000000\n\
         registrations_per_address_per_hour = 1000000\n\
         codes_per_number_per_hour = 1000\ncommand = [\"sh\", \"-c\", \"printf %s {{code}} > '{codes}/{{phone}}'\"]\n\n\
         [abuse]\nsends_per_minute = 100000000\nnew_conversations_per_minute = 100000000\n\n\
         [messaging]\ndelivery_window = 256\n\n[log]\nlevel = \"warn\"\n",
        data = dir.path().join("data").display(),
        codes = codes.display(),
    );
    let cfg_path = dir.path().join("relaybox.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = dir.path().join("relay.log");
    let exe = std::env::current_exe().context("locating this binary")?;
    let child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "warn,relaybox=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting the relay")?;
    let pid = child.id();
    let spawned = Spawned { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("Relay ready."))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("tcp="))
                    .map(str::to_owned)
            })
        {
            return Ok((spawned, addr, pid, codes));
        }
        if Instant::now() > deadline {
            bail!("the spawned relay did not become ready:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A registered bench device.
#[derive(Clone)]
struct User {
    phone: String,
    key: StaticKeypair,
    relay_key: [u8; 32],
    token: Vec<u8>,
}

/// Registers `phone` through RequestCode / VerifyCode, reading the code from `codes`.
async fn register(addr: &str, codes: &Path, phone: &str) -> anyhow::Result<User> {
    let key = StaticKeypair::generate();
    let (mut c, _) = Connection::connect(addr, &key, None, &Identity::Register).await?;
    c.request(client_frame::Body::RequestCode(RequestCode {
        phone: phone.to_owned(),
    }))
    .await?;
    let path = codes.join(phone);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&path) {
            if !code.is_empty() {
                let _ = std::fs::remove_file(&path);
                break code;
            }
        }
        if Instant::now() > deadline {
            bail!("no verification code for {phone} in {}", codes.display());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let body = client_frame::Body::VerifyCode(VerifyCode {
        phone: phone.to_owned(),
        code: code.trim().to_owned(),
    });
    match c.request(body).await? {
        server_frame::Body::Verified(_) => {}
        other => bail!("unexpected answer {other:?}"),
    }
    drop(c);
    // Log in once as the device (XX) to learn the relay key and hold a resumption token.
    let who = Identity::Device {
        account: phone.to_owned(),
        device: 0,
        token: None,
    };
    let (_, est) = Connection::connect(addr, &key, None, &who).await?;
    Ok(User {
        phone: phone.to_owned(),
        key,
        relay_key: est.relay_key,
        token: est.token,
    })
}

/// The n-th bench phone number.
fn phone(n: usize) -> String {
    format!("+1415{:07}", 2_000_000 + n)
}

async fn register_many(
    addr: &str,
    codes: &Path,
    first: usize,
    n: usize,
) -> anyhow::Result<Vec<User>> {
    let bar = super::progress(Duration::from_secs(n as u64), "registering");
    let mut users = Vec::with_capacity(n);
    for i in first..first + n {
        users.push(
            register(addr, codes, &phone(i))
                .await
                .with_context(|| format!("registering {}", phone(i)))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(users)
}

async fn login(addr: &str, u: &User, local: Option<IpAddr>) -> anyhow::Result<Connection> {
    let who = Identity::Device {
        account: u.phone.clone(),
        device: 0,
        token: Some(u.token.clone()),
    };
    let (c, _) = Connection::connect_from(addr, local, &u.key, Some(u.relay_key), &who).await?;
    Ok(c)
}

/// Runs the chosen workload against a relay (`addr`, or a spawned one for `spawn`).
pub async fn run(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    let (_spawned, addr, pid, codes) = if addr == "spawn" || args.spawn {
        let (s, a, p, c) = spawn_relay()?;
        (Some(s), a, Some(p), c)
    } else {
        let codes = args
            .codes_dir
            .clone()
            .context("an existing relay needs --codes-dir (its command verifier's directory)")?;
        (None, addr.to_owned(), args.server_pid, codes)
    };
    let mut report = report_for(&format!("relaybox {addr}"), args, ACK_MEANS);
    match args.workload {
        Workload::Pairs => pairs(&addr, &codes, pid, args, &mut report).await?,
        Workload::Group => group(&addr, &codes, pid, args, &mut report).await?,
        Workload::Handshake => handshakes(&addr, &codes, pid, args, &mut report).await?,
        Workload::Idle => idle(&addr, &codes, pid, args, &mut report).await?,
    }
    Ok(report)
}

/// Sends to `to`'s device 0 (1:1) or to a group's member devices.
fn send_body(
    to: &str,
    group: Option<&GroupInfo>,
    me: &str,
    size: usize,
    shared: &Shared,
) -> client_frame::Body {
    let mut msg_id = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut msg_id);
    let ct = bytes::Bytes::from(payload(size, micros_since(shared.start)));
    let envelopes = match group {
        None => vec![Envelope {
            device: 0,
            olm_type: 1,
            ciphertext: ct,
            account: String::new(),
        }],
        Some(g) => g
            .members
            .iter()
            .filter(|m| m.account != me)
            .flat_map(|m| m.devices.iter().map(|&d| (m.account.clone(), d)))
            .map(|(account, device)| Envelope {
                device,
                olm_type: 1,
                ciphertext: ct.clone(),
                account,
            })
            .collect(),
    };
    let (to, group) = match group {
        None => (to.to_owned(), String::new()),
        Some(g) => (String::new(), g.group.clone()),
    };
    client_frame::Body::Send(Send {
        msg_id,
        to,
        envelopes,
        kind: 1,
        group,
        on_behalf_of: String::new(),
        blobs: Vec::new(),
    })
}

/// One sender: keeps `window` sends in flight (closed loop) or sends at `interval` (open
/// loop); acknowledges the delivered receipts it gets.
/// What one sender task does.
struct SenderPlan {
    me: String,
    /// The recipient account (1:1), or empty with `group`.
    to: String,
    group: Option<GroupInfo>,
    /// Open loop: one send per interval; closed loop if `None`.
    interval: Option<Duration>,
    /// Open loop: start offset, so senders are staggered.
    offset: Duration,
    stop: Instant,
}

async fn sender(mut c: Connection, plan: SenderPlan, args: BenchArgs, shared: Arc<Shared>) {
    let mut ack_h = new_histogram();
    let e2e_h = new_histogram();
    let mut inflight: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let SenderPlan {
        me,
        to,
        group,
        interval,
        offset,
        stop,
    } = plan;
    let mut ticker = interval.map(|i| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut receipts: Vec<u64> = Vec::new();
    while Instant::now() < stop {
        if ticker.is_none() {
            while inflight.len() < args.window {
                match c
                    .send_request(send_body(&to, group.as_ref(), &me, args.size, &shared))
                    .await
                {
                    Ok(id) => {
                        inflight.insert(id, micros_since(shared.start));
                        shared.count_sent();
                    }
                    Err(_) => {
                        shared.count_error();
                        return;
                    }
                }
            }
        }
        let frame = tokio::select! {
            f = c.recv() => f,
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                if inflight.len() < 100_000 {
                    match c.send_request(send_body(&to, group.as_ref(), &me, args.size, &shared)).await {
                        Ok(id) => { inflight.insert(id, micros_since(shared.start)); shared.count_sent(); }
                        Err(_) => { shared.count_error(); return; }
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(stop)) => break,
        };
        match frame {
            Ok(f) => match f.body {
                Some(server_frame::Body::ServerAck(_)) => {
                    if let Some(t) = inflight.remove(&f.req_id) {
                        shared.record_ack(&mut ack_h, micros_since(shared.start).saturating_sub(t));
                    }
                }
                Some(server_frame::Body::Receipt(r)) => {
                    receipts.push(r.seq);
                    if receipts.len() >= 32 {
                        let seqs = std::mem::take(&mut receipts);
                        let _ = c.send_only(client_frame::Body::Ack(Ack { seqs })).await;
                    }
                }
                Some(server_frame::Body::Error(_)) => {
                    inflight.remove(&f.req_id);
                    shared.count_error();
                }
                _ => {}
            },
            Err(_) => {
                shared.count_error();
                return;
            }
        }
    }
    shared.merge(&ack_h, &e2e_h);
}

/// One receiver: records end-to-end latency and acknowledges in batches.
async fn receiver(mut c: Connection, shared: Arc<Shared>, stop: Instant) {
    let ack_h = new_histogram();
    let mut e2e_h = new_histogram();
    let mut pending: Vec<u64> = Vec::new();
    let mut flush = tokio::time::interval(Duration::from_millis(2));
    while Instant::now() < stop {
        tokio::select! {
            f = c.recv() => match f {
                Ok(f) => {
                    if let Some(server_frame::Body::Deliver(d)) = f.body {
                        if let Some(t) = sent_at(&d.ciphertext) {
                            shared.record_delivery(&mut e2e_h, micros_since(shared.start).saturating_sub(t));
                        }
                        pending.push(d.seq);
                        if pending.len() >= 64 {
                            let seqs = std::mem::take(&mut pending);
                            if c.send_only(client_frame::Body::Ack(Ack { seqs })).await.is_err() { shared.count_error(); return; }
                        }
                    }
                }
                Err(_) => { shared.count_error(); return; }
            },
            _ = flush.tick() => {
                if !pending.is_empty() {
                    let seqs = std::mem::take(&mut pending);
                    if c.send_only(client_frame::Body::Ack(Ack { seqs })).await.is_err() { shared.count_error(); return; }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(stop)) => break,
        }
    }
    shared.merge(&ack_h, &e2e_h);
}

/// Measures the window while `tasks` run, filling `report`.
async fn measure(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: &Arc<Shared>,
    pid: Option<u32>,
    args: &BenchArgs,
    label: &str,
    report: &mut Report,
) {
    // Samples are taken at the edges of the measured window.
    let warm = args.warmup;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warm).await;
        (ProcSample::take(pid), ProcSample::take(None))
    });
    let window = run_window(shared, args, label).await;
    let end = (ProcSample::take(pid), ProcSample::take(None));
    let start = sampler.await.unwrap_or((None, None));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    report.finish(shared, window, (start.0, end.0), (start.1, end.1));
}

async fn pairs(
    addr: &str,
    codes: &Path,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = args.pairs.max(1);
    let users = register_many(addr, codes, 0, 2 * n).await?;
    let shared = Shared::new();
    // Log everyone in first: the run's clock starts once the connections exist.
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (s, r) = (&users[2 * i], &users[2 * i + 1]);
        conns.push((login(addr, s, None).await?, login(addr, r, None).await?));
    }
    let stop = Instant::now() + args.warmup + args.duration + Duration::from_secs(2);
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(n as f64 / r.max(1) as f64));
    let mut tasks = Vec::new();
    for (i, (sc, rc)) in conns.into_iter().enumerate() {
        let (s, r) = (&users[2 * i], &users[2 * i + 1]);
        let offset = interval
            .map(|iv| iv.mul_f64(i as f64 / n as f64))
            .unwrap_or_default();
        tasks.push(tokio::spawn(receiver(rc, shared.clone(), stop)));
        tasks.push(tokio::spawn(sender(
            sc,
            SenderPlan {
                me: s.phone.clone(),
                to: r.phone.clone(),
                group: None,
                interval,
                offset,
                stop,
            },
            args.clone(),
            shared.clone(),
        )));
    }
    measure(tasks, &shared, pid, args, "pairs", report).await;
    Ok(())
}

async fn group(
    addr: &str,
    codes: &Path,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let m = args.members.max(2);
    let users = register_many(addr, codes, 0, m).await?;
    let shared = Shared::new();
    let members: Vec<String> = users[1..].iter().map(|u| u.phone.clone()).collect();
    let mut receivers = Vec::with_capacity(users.len());
    for u in &users[1..] {
        receivers.push(login(addr, u, None).await?);
    }
    let stop = Instant::now() + args.warmup + args.duration + Duration::from_secs(5);
    let mut tasks: Vec<_> = receivers
        .into_iter()
        .map(|c| tokio::spawn(receiver(c, shared.clone(), stop)))
        .collect();
    let mut sc = login(addr, &users[0], None).await?;
    let info = match sc
        .request(client_frame::Body::CreateGroup(CreateGroup {
            subject: "bench".into(),
            members: members.clone(),
        }))
        .await?
    {
        server_frame::Body::GroupInfo(g) => g,
        other => bail!("unexpected answer {other:?}"),
    };
    // One session per device: the group sends share the sender's connection below.
    drop(sc);
    let sc = login(addr, &users[0], None).await?;
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));
    tasks.push(tokio::spawn(sender(
        sc,
        SenderPlan {
            me: users[0].phone.clone(),
            to: String::new(),
            group: Some(info),
            interval,
            offset: Duration::ZERO,
            stop,
        },
        args.clone(),
        shared.clone(),
    )));
    measure(tasks, &shared, pid, args, "group", report).await;
    report.notes.push(format!(
        "fan-out to {} member devices per message (deliveries counted)",
        m - 1
    ));
    Ok(())
}

async fn handshakes(
    addr: &str,
    codes: &Path,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let workers = args.connections.clamp(1, 64);
    let users = register_many(addr, codes, 0, workers).await?;
    let mut results = Vec::new();
    for ik in [false, true] {
        let shared = Shared::new();
        let stop = Instant::now() + args.warmup + args.duration + Duration::from_millis(200);
        let mut tasks = Vec::new();
        for u in &users {
            let (addr, mut u, shared) = (addr.to_owned(), u.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = new_histogram();
                while Instant::now() < stop {
                    let began = Instant::now();
                    let token = ik.then(|| u.token.clone());
                    let who = Identity::Device {
                        account: u.phone.clone(),
                        device: 0,
                        token,
                    };
                    match Connection::connect(&addr, &u.key, ik.then_some(u.relay_key), &who).await
                    {
                        Ok((_, est)) => {
                            u.token = est.token;
                            shared.record_delivery(
                                &mut lat,
                                u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX),
                            );
                        }
                        Err(_) => shared.count_error(),
                    }
                }
                shared.merge(&new_histogram(), &lat);
            }));
        }
        let mut r = report.clone();
        measure(
            tasks,
            &shared,
            pid,
            args,
            if ik { "IK logins" } else { "XX logins" },
            &mut r,
        )
        .await;
        results.push(r);
    }
    let (xx, ik) = (&results[0], &results[1]);
    report.clone_from(xx);
    report.handshakes_per_s = Some(xx.delivered_per_s);
    report.notes.push(format!(
        "XX (full, 2 round trips): {:.0} logins/s; IK (resumed, 1 round trip): {:.0} logins/s ({:.2}x); p50 login latency XX {:.2} ms, IK {:.2} ms",
        xx.delivered_per_s,
        ik.delivered_per_s,
        ik.delivered_per_s / xx.delivered_per_s.max(1e-9),
        xx.e2e_latency.as_ref().map(|p| p.p50_us as f64 / 1e3).unwrap_or(0.0),
        ik.e2e_latency.as_ref().map(|p| p.p50_us as f64 / 1e3).unwrap_or(0.0),
    ));
    report.params["ik_logins_per_s"] = serde_json::json!(ik.delivered_per_s);
    Ok(())
}

async fn idle(
    addr: &str,
    codes: &Path,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let k = args.connections.max(1);
    let users = register_many(addr, codes, 0, k).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::take(pid);
    let mut held = Vec::with_capacity(k);
    let sources = args.sources.max(1);
    for (i, u) in users.iter().enumerate() {
        let src = IpAddr::from([
            127,
            0,
            0,
            1 + u8::try_from(i % usize::from(sources)).unwrap_or(0),
        ]);
        held.push(login(addr, u, Some(src)).await?);
    }
    tokio::time::sleep(args.warmup.max(Duration::from_secs(1))).await;
    let after = ProcSample::take(pid);
    report.idle_connections = Some(u64::try_from(held.len()).unwrap_or(u64::MAX));
    if let (Some(a), Some(b)) = (before, after) {
        report.server_rss_kib = Some(b.rss_kib);
        report.rss_bytes_per_idle_connection =
            Some((b.rss_kib.saturating_sub(a.rss_kib) * 1024) as f64 / k as f64);
    } else {
        report
            .notes
            .push("no server PID: pass --server-pid to measure its memory".into());
    }
    drop(held);
    Ok(())
}
