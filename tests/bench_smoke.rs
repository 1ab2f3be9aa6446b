//! `relaybox bench` works end to end against a relay it spawns: every workload delivers, and
//! the JSON result carries the figures the comparison runner reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::BIN;

fn bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--spawn", "--warmup", "1s", "--duration", "2s", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn the_pairs_workload_delivers_durably_acked_messages_and_reports_latency_and_cpu() {
    let r = bench(&["pairs", "--pairs", "4", "--window", "4"]);
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    assert!(r["acked"].as_u64().unwrap() > 0, "{r}");
    assert!(r["ack_means"].as_str().unwrap().contains("fsync"), "{r}");
    assert!(r["ack_latency"]["p99_us"].as_u64().unwrap() > 0, "{r}");
    assert!(r["e2e_latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
    assert!(r["server_cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["errors"].as_u64().unwrap(), 0, "{r}");
}

#[test]
fn the_open_loop_group_handshake_and_idle_workloads_report_their_figures() {
    let r = bench(&["pairs", "--pairs", "4", "--rate", "200"]);
    let rate = r["delivered_per_s"].as_f64().unwrap();
    assert!(
        (100.0..=300.0).contains(&rate),
        "offered 200/s, delivered {rate}/s: {r}"
    );
    let r = bench(&["group", "--members", "5"]);
    assert!(r["delivered"].as_u64().unwrap() >= 4, "{r}");
    let r = bench(&["handshake", "--connections", "2"]);
    assert!(r["handshakes_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let r = bench(&["idle", "--connections", "50", "--sources", "2"]);
    assert_eq!(r["idle_connections"].as_u64().unwrap(), 50, "{r}");
    assert!(r["rss_bytes_per_idle_connection"].as_f64().is_some(), "{r}");
}
