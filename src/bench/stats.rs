//! Measurement: latency histograms, counters shared by generator tasks, /proc samples of the
//! server under test, and the report every workload produces.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in microseconds (60 s); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Microseconds since `start`, as embedded in a generated payload.
pub fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// State shared by every generator task of one run.
pub struct Shared {
    /// The clock payload timestamps are relative to.
    pub start: Instant,
    /// True during the measured window (after warm-up).
    pub measuring: AtomicBool,
    /// Messages delivered to receivers during the window.
    pub delivered: AtomicU64,
    /// Sends acknowledged during the window.
    pub acked: AtomicU64,
    /// Sends attempted during the window.
    pub sent: AtomicU64,
    /// Errors seen (any time).
    pub errors: AtomicU64,
    /// Ack (PUBACK / JetStream ack / ServerAck) latency, µs.
    pub ack_latency: Mutex<Histogram<u64>>,
    /// Send-to-receive latency, µs.
    pub e2e_latency: Mutex<Histogram<u64>>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            measuring: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ack_latency: Mutex::new(new_histogram()),
            e2e_latency: Mutex::new(new_histogram()),
        })
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn count_sent(&self) {
        if self.is_measuring() {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A send acknowledged `latency_us` after it was sent.
    pub fn record_ack(&self, local: &mut Histogram<u64>, latency_us: u64) {
        if self.is_measuring() {
            self.acked.fetch_add(1, Ordering::Relaxed);
            let _ = local.record(latency_us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// A message received `latency_us` after it was sent.
    pub fn record_delivery(&self, local: &mut Histogram<u64>, latency_us: u64) {
        if self.is_measuring() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            let _ = local.record(latency_us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Merges a task's local histograms (call when the task ends).
    pub fn merge(&self, ack: &Histogram<u64>, e2e: &Histogram<u64>) {
        if let Ok(mut h) = self.ack_latency.lock() {
            let _ = h.add(ack);
        }
        if let Ok(mut h) = self.e2e_latency.lock() {
            let _ = h.add(e2e);
        }
    }
}

/// A histogram for microsecond latencies.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds (1 µs ..= 60 s, 3 significant digits) that hdrhistogram accepts: this
    // cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant, valid histogram bounds")
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// CPU time and memory of a process, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcSample {
    /// Samples `pid` (`None`: this process).
    pub fn take(pid: Option<u32>) -> Option<Self> {
        let base = pid
            .map(|p| format!("/proc/{p}"))
            .unwrap_or_else(|| "/proc/self".into());
        let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let rest = &stat[stat.rfind(") ")? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Some(Self {
            at: Instant::now(),
            cpu_ticks: utime + stime,
            rss_kib,
        })
    }

    /// CPU seconds used between two samples.
    pub fn cpu_seconds_since(&self, earlier: &Self) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / TICKS_PER_SECOND
    }

    /// CPU use as a share of one core between two samples, in percent.
    pub fn cpu_percent_since(&self, earlier: &Self) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        100.0 * self.cpu_seconds_since(earlier) / wall
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// `relaybox`, `mqtt` or `nats` (and the address).
    pub target: String,
    pub workload: String,
    /// Parameters of the run (pairs, size, window, rate, members, …).
    pub params: serde_json::Value,
    /// When the server's acknowledgement means the data is on disk.
    pub ack_means: String,
    pub measured_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub ack_latency: Option<Percentiles>,
    pub e2e_latency: Option<Percentiles>,
    pub server_cpu_percent: Option<f64>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub generator_cpu_percent: Option<f64>,
    pub handshakes_per_s: Option<f64>,
    pub idle_connections: Option<u64>,
    pub rss_bytes_per_idle_connection: Option<f64>,
    pub errors: u64,
    pub notes: Vec<String>,
}

impl Report {
    /// Fills the throughput, latency and CPU fields from a finished run.
    pub fn finish(
        &mut self,
        shared: &Shared,
        window: Duration,
        server: (Option<ProcSample>, Option<ProcSample>),
        me: (Option<ProcSample>, Option<ProcSample>),
    ) {
        self.measured_s = window.as_secs_f64();
        self.sent = shared.sent.load(Ordering::Relaxed);
        self.acked = shared.acked.load(Ordering::Relaxed);
        self.delivered = shared.delivered.load(Ordering::Relaxed);
        self.delivered_per_s = self.delivered as f64 / self.measured_s.max(1e-9);
        self.errors = shared.errors.load(Ordering::Relaxed);
        self.ack_latency = shared
            .ack_latency
            .lock()
            .ok()
            .and_then(|h| Percentiles::of(&h));
        self.e2e_latency = shared
            .e2e_latency
            .lock()
            .ok()
            .and_then(|h| Percentiles::of(&h));
        if let (Some(a), Some(b)) = server {
            self.server_cpu_percent = Some(b.cpu_percent_since(&a));
            self.server_rss_kib = Some(b.rss_kib);
            if self.delivered > 0 {
                self.server_cpu_us_per_msg =
                    Some(1e6 * b.cpu_seconds_since(&a) / self.delivered as f64);
            }
        }
        if let (Some(a), Some(b)) = me {
            self.generator_cpu_percent = Some(b.cpu_percent_since(&a));
        }
        if self.generator_cpu_percent.is_some_and(|p| p > 90.0) {
            self.notes.push(
                "generator above 90% CPU: the result is bounded by the generator, not the server"
                    .into(),
            );
        }
    }

    /// A human-readable summary.
    pub fn print(&self) {
        println!("target      {}", self.target);
        println!("workload    {}  {}", self.workload, self.params);
        println!("ack means   {}", self.ack_means);
        if let Some(h) = self.handshakes_per_s {
            println!("handshakes  {h:.0}/s");
        }
        if let (Some(n), Some(b)) = (self.idle_connections, self.rss_bytes_per_idle_connection) {
            println!(
                "idle        {n} connections, {:.2} KiB of server RSS each",
                b / 1024.0
            );
        }
        if self.delivered > 0 || self.sent > 0 {
            println!(
                "delivered   {} in {:.1} s = {:.0} msg/s  (sent {}, acked {})",
                self.delivered, self.measured_s, self.delivered_per_s, self.sent, self.acked
            );
        }
        let show = |name: &str, p: &Option<Percentiles>| {
            if let Some(p) = p {
                println!(
                    "{name}  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                    p.p50_us as f64 / 1e3,
                    p.p99_us as f64 / 1e3,
                    p.p999_us as f64 / 1e3,
                    p.max_us as f64 / 1e3
                );
            }
        };
        show("ack lat   ", &self.ack_latency);
        show("e2e lat   ", &self.e2e_latency);
        if let Some(c) = self.server_cpu_percent {
            println!(
                "server      {c:.0}% CPU, {} µs CPU/msg, RSS {} KiB",
                self.server_cpu_us_per_msg
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
                self.server_rss_kib.unwrap_or(0)
            );
        }
        if let Some(g) = self.generator_cpu_percent {
            println!("generator   {g:.0}% CPU");
        }
        if self.errors > 0 {
            println!("errors      {}", self.errors);
        }
        for n in &self.notes {
            println!("note        {n}");
        }
    }
}
