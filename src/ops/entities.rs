//! `relaybox admin entity …`: business entities through the admin API
//! (`edge::admin::entities`): create, list, show, set, agents, threads, assign, release, close.

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::admin::{encode, print};
use super::api::Api;
use super::Failure;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PolicyArg {
    /// Only the administrator assigns.
    Manual,
    /// The next agent in turn, once the administrator has been offline long enough.
    RoundRobin,
    /// The agent with the fewest open threads, once the administrator has been offline.
    LeastLoaded,
}

impl PolicyArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::RoundRobin => "round-robin",
            Self::LeastLoaded => "least-loaded",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum EntityCmd {
    /// Create an entity: a handle customers message, run by a registered administrator.
    Create {
        /// @name, e.g. @acme-branch-12.
        handle: String,
        /// The name customers see.
        #[arg(long)]
        name: String,
        /// The administrator's phone number (a registered account).
        #[arg(long)]
        admin: String,
        /// A phone number customers may message instead of the handle.
        #[arg(long)]
        phone: Option<String>,
        #[arg(long, value_enum, default_value = "manual")]
        policy: PolicyArg,
        /// Also send customer messages of assigned threads to the administrator.
        #[arg(long)]
        copy_admin: bool,
        /// Assign automatically after the administrator has been offline this long
        /// (default: entities.auto_assign_after).
        #[arg(long)]
        auto_assign_after: Option<String>,
    },
    /// Every entity with its agents and their load.
    List,
    /// One entity: agents, load and threads.
    Show { handle: String },
    /// Change an entity's name, policy, copying or automatic delay.
    Set {
        handle: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        #[arg(long)]
        copy_admin: Option<bool>,
        #[arg(long)]
        auto_assign_after: Option<String>,
    },
    /// Add (or rename) an agent: a registered account, shown to customers as NAME.
    AddAgent {
        handle: String,
        agent: String,
        #[arg(long)]
        name: String,
    },
    /// Remove an agent: its threads return to the administrator at once.
    RemoveAgent { handle: String, agent: String },
    /// The entity's threads (only one agent's with --agent).
    Threads {
        handle: String,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Assign a customer's thread to an agent (no history: only the administrator's client
    /// can hand that over).
    Assign {
        handle: String,
        customer: String,
        agent: String,
    },
    /// Route a customer's thread back to the administrator.
    Release { handle: String, customer: String },
    /// Close a customer's thread (a new message from the customer reopens it).
    Close { handle: String, customer: String },
}

pub fn run(api: &Api, as_json: bool, cmd: EntityCmd) -> Result<(), Failure> {
    let base = |h: &str| format!("/v1/entities/{}", encode(h));
    let v = match cmd {
        EntityCmd::Create {
            handle,
            name,
            admin,
            phone,
            policy,
            copy_admin,
            auto_assign_after,
        } => {
            let mut body = json!({
                "handle": handle, "name": name, "admin": admin,
                "policy": policy.as_str(), "copy_admin": copy_admin,
            });
            if let Some(p) = phone {
                body["phone"] = json!(p);
            }
            if let Some(a) = auto_assign_after {
                body["auto_assign_after"] = json!(a);
            }
            api.post_json("/v1/entities", &body)?
        }
        EntityCmd::List => {
            let v = api.json("GET", "/v1/entities")?;
            print(as_json, &v, |v| {
                let mut out = String::new();
                for e in v["entities"].as_array().into_iter().flatten() {
                    out.push_str(&entity_table(e));
                }
                if out.is_empty() {
                    out.push_str("No entities.\n");
                }
                out
            });
            return Ok(());
        }
        EntityCmd::Show { handle } => api.json("GET", &base(&handle))?,
        EntityCmd::Set {
            handle,
            name,
            policy,
            copy_admin,
            auto_assign_after,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(p) = policy {
                body["policy"] = json!(p.as_str());
            }
            if let Some(c) = copy_admin {
                body["copy_admin"] = json!(c);
            }
            if let Some(a) = auto_assign_after {
                body["auto_assign_after"] = json!(a);
            }
            api.send_json("PATCH", &base(&handle), &body)?
        }
        EntityCmd::AddAgent {
            handle,
            agent,
            name,
        } => api.send_json(
            "PUT",
            &format!("{}/agents/{}", base(&handle), encode(&agent)),
            &json!({ "name": name }),
        )?,
        EntityCmd::RemoveAgent { handle, agent } => api.json(
            "DELETE",
            &format!("{}/agents/{}", base(&handle), encode(&agent)),
        )?,
        EntityCmd::Threads { handle, agent } => {
            let mut path = format!("{}/threads", base(&handle));
            if let Some(a) = agent {
                path.push_str(&format!("?agent={}", encode(&a)));
            }
            api.json("GET", &path)?
        }
        EntityCmd::Assign {
            handle,
            customer,
            agent,
        } => api.post_json(
            &format!("{}/threads/{}/assign", base(&handle), encode(&customer)),
            &json!({ "agent": agent }),
        )?,
        EntityCmd::Release { handle, customer } => api.post_json(
            &format!("{}/threads/{}/release", base(&handle), encode(&customer)),
            &json!({}),
        )?,
        EntityCmd::Close { handle, customer } => api.post_json(
            &format!("{}/threads/{}/close", base(&handle), encode(&customer)),
            &json!({}),
        )?,
    };
    print(as_json, &v, entity_table);
    Ok(())
}

fn entity_table(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut out = String::new();
    if !v["name"].is_null() {
        out.push_str(&format!(
            "{} \"{}\" {}\nadministrator {}   policy {}   copy to administrator {}\n",
            s("handle"),
            s("name"),
            s("phone"),
            s("admin"),
            s("policy"),
            v["copy_admin"]
        ));
    } else {
        out.push_str(&format!("{}\n", s("handle")));
    }
    out.push_str(&format!(
        "{:<20} {:<20} {}\n",
        "AGENT", "NAME", "OPEN THREADS"
    ));
    for a in v["agents"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:<20} {}\n",
            a["account"].as_str().unwrap_or("?"),
            a["name"].as_str().unwrap_or(""),
            a["open_threads"]
        ));
    }
    if let Some(threads) = v["threads"].as_array().filter(|t| !t.is_empty()) {
        out.push_str(&format!(
            "{:<20} {:<8} {}\n",
            "CUSTOMER", "STATE", "ROUTED TO"
        ));
        for t in threads {
            let state = if t["open"] == json!(true) {
                "open"
            } else {
                "closed"
            };
            out.push_str(&format!(
                "{:<20} {:<8} {}\n",
                t["customer"].as_str().unwrap_or("?"),
                state,
                t["agent"].as_str().unwrap_or("administrator")
            ));
        }
    }
    out
}
