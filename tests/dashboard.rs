//! The Grafana dashboard (`config/grafana/relaybox.json`) against the real binary: every series
//! a panel's query names, with the label values it matches on, is one that a running relay's
//! `/metrics` exports. A renamed metric or a panel with a typo fails here, not on an operator's
//! screen.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{next_event, Relay};
use relaybox::client::Event;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const DASHBOARD: &str = include_str!("../config/grafana/relaybox.json");

/// Labels Prometheus adds when it scrapes (the relay never exports them).
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// One series a query names: the sample name and the label values it matches exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Every `expr` of every panel target (rows nest panels too), and the template queries.
fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(child, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The `relaybox_*` selectors of a PromQL expression with their `label="value"` matchers
/// (regex and negative matchers, and the scrape's own labels, are not checked).
fn selectors(expr: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("relaybox_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = BTreeMap::new();
        let after = &tail[end..];
        if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').expect("a selector's braces close");
            for matcher in body[..close].split(',') {
                if let Some((label, value)) = matcher.split_once("=\"") {
                    let label = label.trim();
                    if label.ends_with(['!', '=', '~']) || SCRAPE_LABELS.contains(&label) {
                        continue;
                    }
                    labels.insert(label.to_owned(), value.trim_end_matches('"').to_owned());
                }
            }
        }
        out.push(Selector { name, labels });
        rest = &tail[end..];
    }
    out
}

/// The samples of an OpenMetrics exposition: (name, labels).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            }
        })
        .collect()
}

/// The selectors that no sample of `text` satisfies.
fn missing(text: &str, wanted: &[Selector]) -> Vec<Selector> {
    let have = samples(text);
    wanted
        .iter()
        .filter(|s| {
            !have.iter().any(|(name, labels)| {
                *name == s.name && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .cloned()
        .collect()
}

fn scrape(relay: &Relay) -> String {
    let url = format!("{}/metrics", relay.admin_url());
    let mut res = ureq::get(&url).call().expect("GET /metrics");
    assert_eq!(res.status().as_u16(), 200);
    res.body_mut().read_to_string().unwrap()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let line = text
        .lines()
        .find(|l| {
            samples(l)
                .first()
                .is_some_and(|(n, ls)| n == name && want.iter().all(|(k, v)| ls.get(k) == Some(v)))
        })
        .unwrap_or_else(|| panic!("{name} {labels:?} not in:\n{text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn the_selector_parser_reads_names_and_exact_label_matchers() {
    let s = selectors(
        r#"rate(relaybox_request_errors_total{instance=~"$instance",code="ERROR_CODE_BANNED"}[5m]) / relaybox_queue_depth"#,
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "relaybox_request_errors_total");
    assert_eq!(s[0].labels.len(), 1);
    assert_eq!(s[0].labels["code"], "ERROR_CODE_BANNED");
    assert_eq!(s[1].name, "relaybox_queue_depth");
    // The check can fail: a name or a label value the exposition lacks is reported.
    let text = "relaybox_queue_depth 0\nrelaybox_request_errors_total{code=\"ERROR_CODE_RATE_LIMITED\"} 0\n";
    assert_eq!(missing(text, &s), vec![s[0].clone()]);
}

#[tokio::test]
async fn every_series_the_dashboard_queries_is_exported_by_a_running_relay() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "relaybox");
    let wanted: Vec<Selector> = queries(&dashboard)
        .iter()
        .flat_map(|q| selectors(q))
        .collect();
    // Every topic the issue names has a panel, and so at least one query.
    for family in [
        "relaybox_connections",
        "relaybox_messages_accepted_total",
        "relaybox_messages_delivered_total",
        "relaybox_send_ack_latency_seconds_bucket",
        "relaybox_queue_depth",
        "relaybox_durability_barrier_latency_seconds_bucket",
        "relaybox_handshakes_total",
        "relaybox_bans",
        "relaybox_request_errors_total",
        "relaybox_connections_refused_total",
        "relaybox_mqtt_connected",
        "relaybox_blob_size_bytes",
    ] {
        assert!(
            wanted.iter().any(|s| s.name == family),
            "no panel queries {family}"
        );
    }

    let relay = Relay::start();
    // A fresh relay already exports every series the dashboard needs, at zero.
    let idle = scrape(&relay);
    let gaps = missing(&idle, &wanted);
    assert!(
        gaps.is_empty(),
        "not exported by an idle relay: {gaps:#?}\n{idle}"
    );

    // Traffic moves the new series: an acknowledged Send is timed, a refused one counted.
    let mut alice = relay.user("alice", ALICE).await;
    let mut bob = relay.user("bob", BOB).await;
    alice.send_text(BOB, "hello").await.unwrap();
    assert!(matches!(next_event(&mut bob).await, Event::Message { .. }));
    let unknown = alice.send_text("+14155550199", "anyone?").await;
    assert!(
        unknown.is_err(),
        "a send to an unregistered number is refused"
    );
    let busy = scrape(&relay);
    assert!(value(&busy, "relaybox_send_ack_latency_seconds_count", &[]) >= 1.0);
    assert!(
        value(
            &busy,
            "relaybox_request_errors_total",
            &[("code", "ERROR_CODE_UNKNOWN_ACCOUNT")]
        ) >= 1.0
    );
    let gaps = missing(&busy, &wanted);
    assert!(gaps.is_empty(), "not exported after traffic: {gaps:#?}");
}

#[test]
fn connections_over_the_address_limit_are_counted_by_reason() {
    let relay = Relay::start_with("[limits]\nmax_connections_per_ip = 1\n");
    let first = std::net::TcpStream::connect(&relay.addr).unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        // The second connection is refused with a plaintext frame and closed.
        let second = std::net::TcpStream::connect(&relay.addr).unwrap();
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut &second, &mut buf);
        let text = scrape(&relay);
        if value(
            &text,
            "relaybox_connections_refused_total",
            &[("reason", "address_limit")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refusal not counted:\n{text}"
        );
    }
    drop(first);
}
