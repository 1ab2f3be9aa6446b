//! `relaybox admin abuse list|show|lift|watch`: abuse metrics, verdicts and history through
//! the admin API (`edge::admin::abuse`).

use clap::Subcommand;
use serde_json::Value;

use super::admin::{encode, print};
use super::api::Api;
use super::Failure;

#[derive(Subcommand, Debug)]
pub enum AbuseCmd {
    /// Accounts active in the window or with a verdict, with their metrics.
    List {
        /// Only `banned`, `watched` or `any` accounts.
        #[arg(long, default_value = "any")]
        verdict: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One account: its metrics, its ban or watch entry, and its history.
    Show { account: String },
    /// End an account's ban now (and take it off the watch list).
    Lift { account: String },
    /// Put an account on the watch list (evaluated more often, with tighter thresholds).
    Watch { account: String },
}

pub fn run(api: &Api, as_json: bool, cmd: AbuseCmd) -> Result<(), Failure> {
    match cmd {
        AbuseCmd::List { verdict, limit } => {
            let v = api.json(
                "GET",
                &format!("/v1/abuse?verdict={}&limit={limit}", encode(&verdict)),
            )?;
            print(as_json, &v, list_table);
        }
        AbuseCmd::Show { account } => {
            let v = api.json("GET", &format!("/v1/abuse/{}", encode(&account)))?;
            print(as_json, &v, show_table);
        }
        AbuseCmd::Lift { account } => {
            let v = api.json("POST", &format!("/v1/abuse/{}/lift", encode(&account)))?;
            print(as_json, &v, |v| {
                format!(
                    "Lifted: {} is now {}.\n",
                    s(&v["account"]),
                    s(&v["verdict"])
                )
            });
        }
        AbuseCmd::Watch { account } => {
            let v = api.json("POST", &format!("/v1/abuse/{}/watch", encode(&account)))?;
            print(as_json, &v, |v| {
                format!("{} is on the watch list.\n", s(&v["account"]))
            });
        }
    }
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn list_table(v: &Value) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>4}  {}\n",
        "ACCOUNT", "VERDICT", "MSGS", "SYM%", "PEER%", "SIZE%", "BLOCKS", "OFF", "BANNED UNTIL"
    );
    for r in v["accounts"].as_array().into_iter().flatten() {
        let m = &r["metrics"];
        let until = match r["ban"]["active"].as_bool() {
            Some(true) => s(&r["ban"]["until"]).to_owned(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<18} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>4}  {}\n",
            s(&r["account"]),
            s(&r["verdict"]),
            // serde_json's Display ignores widths: format the numbers as text first.
            m["messages"].to_string(),
            m["symmetry_percent"].to_string(),
            m["peer_uniqueness_percent"].to_string(),
            m["message_uniqueness_percent"].to_string(),
            m["blocks"].to_string(),
            r["offences"].to_string(),
            until
        ));
    }
    out
}

fn show_table(v: &Value) -> String {
    let m = &v["metrics"];
    let mut out = format!(
        "account              {}\nregistered           {}\nverdict              {}\n",
        s(&v["account"]),
        v["registered"],
        s(&v["verdict"])
    );
    if v["ban"].is_object() {
        out.push_str(&format!(
            "ban                  {} (offence {}, until {})\n  reason             {}\n",
            if v["ban"]["active"] == Value::Bool(true) {
                "in force"
            } else {
                "ended"
            },
            v["ban"]["offence"],
            s(&v["ban"]["until"]),
            s(&v["ban"]["reason"])
        ));
    }
    if v["watch"].is_object() {
        out.push_str(&format!(
            "watch list           since {} by {}: {}\n",
            when(&v["watch"]["since_ms"]),
            s(&v["watch"]["by"]),
            s(&v["watch"]["reason"])
        ));
    }
    out.push_str(&format!(
        "offences             {}\nmetrics (last {} s)\n  messages           {} ({} per minute)\n  symmetry           {}% to accounts that have it in their contacts\n  peer uniqueness    {}% to peers not messaged before ({} distinct peers, {} new conversations)\n  message uniqueness {}% with an envelope size not seen before\n  blocks received    {} ({}% of its peers)\nhistory\n",
        v["offences"],
        v["window_secs"],
        m["messages"],
        m["messages_per_minute"],
        m["symmetry_percent"],
        m["peer_uniqueness_percent"],
        m["distinct_peers"],
        m["new_conversations"],
        m["message_uniqueness_percent"],
        m["blocks"],
        m["block_rate_percent"],
    ));
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        out.push_str("  (none)\n");
    }
    for h in history {
        out.push_str(&format!(
            "  {}  {:<7} by {:<15} {}\n",
            when(&h["at_ms"]),
            s(&h["kind"]),
            s(&h["by"]),
            s(&h["detail"])
        ));
    }
    out
}

fn when(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
        .unwrap_or_else(|| "?".into())
}
