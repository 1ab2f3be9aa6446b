//! `relaybox admin …`: tables for people, `--json` for scripts.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::api::Api;
use super::{ApiArgs, Failure};
use crate::config::Config;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Accounts: list them, or show one.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Devices: remove one (it is revoked and its session closed).
    #[command(subcommand)]
    Devices(DevicesCmd),
    /// Connections, accounts, devices, groups, queue depth, uptime, version.
    Stats,
    /// The last entries of the audit log.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The Prometheus metrics, as the relay exposes them.
    Metrics,
    /// Liveness and readiness (exit 1 if not ready).
    Health,
    /// Blobs: usage (in the store and on disk), or purge one now (it then answers 410 Gone
    /// and recipients recall it from the sender).
    #[command(subcommand)]
    Blobs(BlobsCmd),
    /// MQTT devices: provision, list, remove.
    #[command(subcommand)]
    MqttDevice(super::mqtt::MqttDeviceCmd),
    /// The MQTT bridge: `status`.
    #[command(subcommand)]
    Bridge(super::mqtt::BridgeCmd),
    /// Business entities: create, list, show, set, add-agent, remove-agent, threads,
    /// assign, release, close.
    #[command(subcommand)]
    Entity(super::entities::EntityCmd),
    /// Abuse: accounts' metrics, bans, watch list and history; lift a ban, watch an account.
    #[command(subcommand)]
    Abuse(super::abuse::AbuseCmd),
}

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    /// Accounts in phone-number order, a page at a time.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this phone number (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One account: its devices, whether they are online, their queued messages.
    Show { phone: String },
}

#[derive(Subcommand, Debug)]
pub enum BlobsCmd {
    /// Stored blobs and bytes; with --account, that account's usage against its quota.
    Usage {
        #[arg(long)]
        account: Option<String>,
    },
    /// Purge one blob by id (64 hex digits) now.
    Purge { id: String },
}

#[derive(Subcommand, Debug)]
pub enum DevicesCmd {
    /// Remove a device: revoke it, drop its keys and queue, close its session.
    Remove { phone: String, device: u32 },
}

/// Runs `relaybox admin …` with the loaded config.
pub fn run(args: AdminArgs, cfg: &Config) -> Result<(), Failure> {
    let needs_token = !matches!(args.cmd, AdminCmd::Metrics | AdminCmd::Health);
    let api = Api::new(&args.api, cfg, needs_token)?;
    match args.cmd {
        AdminCmd::Accounts(AccountsCmd::List { limit, after }) => {
            let mut path = format!("/v1/accounts?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={}", encode(&a)));
            }
            let v = api.json("GET", &path)?;
            print(args.json, &v, accounts_table);
        }
        AdminCmd::Accounts(AccountsCmd::Show { phone }) => {
            let v = api.json("GET", &format!("/v1/accounts/{}", encode(&phone)))?;
            print(args.json, &v, account_table);
        }
        AdminCmd::Devices(DevicesCmd::Remove { phone, device }) => {
            let v = api.json(
                "DELETE",
                &format!("/v1/accounts/{}/devices/{device}", encode(&phone)),
            )?;
            print(args.json, &v, |v| {
                format!(
                    "Removed device {} of {}.\n",
                    v["device"],
                    v["phone"].as_str().unwrap_or("?")
                )
            });
        }
        AdminCmd::Stats => {
            let v = api.json("GET", "/v1/stats")?;
            print(args.json, &v, stats_table);
        }
        AdminCmd::Audit { limit } => {
            let v = api.json("GET", &format!("/v1/audit?limit={limit}"))?;
            print(args.json, &v, audit_table);
        }
        AdminCmd::Metrics => {
            let (status, body) = api.text("/metrics")?;
            if status != 200 {
                return Err(super::api::api_error(status, &body));
            }
            print!("{body}");
        }
        AdminCmd::Blobs(BlobsCmd::Usage { account }) => {
            let mut path = "/v1/blobs".to_owned();
            if let Some(a) = account {
                path.push_str(&format!("?account={}", encode(&a)));
            }
            let v = api.json("GET", &path)?;
            print(args.json, &v, blobs_table);
        }
        AdminCmd::Blobs(BlobsCmd::Purge { id }) => {
            let v = api.json("DELETE", &format!("/v1/blobs/{}", encode(&id)))?;
            print(args.json, &v, |v| {
                format!(
                    "Purged blob {}; it now answers 410 Gone.\n",
                    v["blob"].as_str().unwrap_or("?")
                )
            });
        }
        AdminCmd::MqttDevice(cmd) => super::mqtt::device(&api, args.json, cmd)?,
        AdminCmd::Bridge(cmd) => super::mqtt::bridge(&api, args.json, cmd)?,
        AdminCmd::Entity(cmd) => super::entities::run(&api, args.json, cmd)?,
        AdminCmd::Abuse(cmd) => super::abuse::run(&api, args.json, cmd)?,
        AdminCmd::Health => {
            let (_, alive) = api.text("/healthz")?;
            let (status, ready) = api.text("/readyz")?;
            if args.json {
                println!(
                    "{{\"healthz\":{},\"readyz\":{}}}",
                    alive.trim(),
                    ready.trim()
                );
            } else {
                println!(
                    "alive: yes\nready: {}",
                    if status == 200 { "yes" } else { "no" }
                );
            }
            if status != 200 {
                return Err(Failure::api(format!(
                    "the relay is not ready: {}",
                    ready.trim()
                )));
            }
        }
    }
    Ok(())
}

/// Percent-encodes a path or query component (a `+` in a phone number included).
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(super) fn print(json: bool, v: &Value, table: impl Fn(&Value) -> String) {
    if json {
        println!("{v}");
    } else {
        print!("{}", table(v));
    }
}

fn when(ms: &Value) -> String {
    match ms.as_u64() {
        Some(0) | None => "never".to_owned(),
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn accounts_table(v: &Value) -> String {
    let mut out = format!("{:<18} {:<10} {}\n", "PHONE", "DEVICES", "LAST SEEN");
    for a in v["accounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<18} {:<10} {}\n",
            a["phone"].as_str().unwrap_or("?"),
            list(&a["devices"]),
            when(&a["last_seen_ms"])
        ));
    }
    if let Some(next) = v["next"].as_str() {
        out.push_str(&format!("(more: --after {next})\n"));
    }
    out
}

fn account_table(v: &Value) -> String {
    let mut out = format!(
        "account   {}\nonline    {}\nlast seen {}\nqueued    {}\n\n{:<7} {:<7} {:<7} {:<21} {}\n",
        v["phone"].as_str().unwrap_or("?"),
        v["online"],
        when(&v["last_seen_ms"]),
        v["queued"],
        "DEVICE",
        "ONLINE",
        "QUEUED",
        "REGISTERED",
        "NOISE KEY"
    );
    for d in v["devices"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<7} {:<7} {:<7} {:<21} {}\n",
            d["device"],
            d["online"],
            d["queued"],
            when(&d["registered_at_ms"]),
            d["noise_static"].as_str().unwrap_or("?")
        ));
    }
    out
}

fn blobs_table(v: &Value) -> String {
    let mut out = format!(
        "{:<16} {}\n{:<16} {}\n{:<16} {}\n{:<16} {}\n",
        "stored_blobs",
        v["stored_blobs"],
        "stored_bytes",
        v["stored_bytes"],
        "files_on_disk",
        v["files_on_disk"],
        "bytes_on_disk",
        v["bytes_on_disk"]
    );
    if let Some(a) = v["account"].as_object() {
        out.push_str(&format!(
            "{:<16} {} of {} bytes ({})\n",
            "account",
            a.get("bytes").unwrap_or(&Value::Null),
            a.get("quota_bytes").unwrap_or(&Value::Null),
            a.get("account").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    out
}

fn stats_table(v: &Value) -> String {
    let mut out = String::new();
    for key in [
        "version",
        "uptime_seconds",
        "accounts",
        "devices",
        "groups",
        "queue_depth",
        "live_devices",
        "store_bytes",
    ] {
        let value = match &v[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("{key:<16} {value}\n"));
    }
    if let Some(c) = v["connections"].as_object() {
        for (transport, n) in c {
            out.push_str(&format!("{:<16} {n}\n", format!("connections.{transport}")));
        }
    }
    out
}

fn audit_table(v: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<46} {:<6} {}\n",
        "TIME", "WHO", "ACTION", "STATUS", "TARGET / OUTCOME"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        let target = e["target"]
            .as_object()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:<16} {:<46} {:<6} {} {}\n",
            e["time"].as_str().unwrap_or("?"),
            e["who"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["status"],
            target,
            e["outcome"].as_str().unwrap_or("?")
        ));
    }
    out
}
