//! `relaybox admin mqtt-device add|list|remove` and `relaybox admin bridge status`: the MQTT
//! bridge through the admin API (`edge::admin::mqtt`).

use clap::Subcommand;
use serde_json::{json, Value};

use super::admin::{encode, print};
use super::api::Api;
use super::Failure;

#[derive(Subcommand, Debug)]
pub enum MqttDeviceCmd {
    /// Provision a device: the account @ID, a member of each --thread group, served live.
    Add {
        /// Device id: 1 to 32 of a-z 0-9 . - (it names the device's MQTT topics).
        id: String,
        /// A name for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// A group the device posts to and receives from (repeatable).
        #[arg(long = "thread", value_name = "GROUP_ID")]
        threads: Vec<String>,
    },
    /// Every provisioned device and its topics.
    List,
    /// Remove a device (its keys, outbox and account device).
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum BridgeCmd {
    /// Connected or not, the last error, counters, outbox depth (exit 1 if disconnected).
    Status,
}

pub fn device(api: &Api, as_json: bool, cmd: MqttDeviceCmd) -> Result<(), Failure> {
    match cmd {
        MqttDeviceCmd::Add { id, name, threads } => {
            let v = api.post_json(
                "/v1/mqtt/devices",
                &json!({ "id": id, "name": name, "threads": threads }),
            )?;
            print(as_json, &v, |v| {
                format!(
                    "Provisioned {} (joined {}).\nThe device publishes to {} and subscribes to {}.\n",
                    v["account"].as_str().unwrap_or("?"),
                    join(&v["joined"]),
                    v["up_topic"].as_str().unwrap_or("?"),
                    v["down_topic"].as_str().unwrap_or("?"),
                )
            });
        }
        MqttDeviceCmd::List => {
            let v = api.json("GET", "/v1/mqtt/devices")?;
            print(as_json, &v, |v| {
                let mut out = format!("{:<20} {:<20} {}\n", "DEVICE", "NAME", "GROUPS");
                for d in v["devices"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<20} {:<20} {}\n",
                        d["account"].as_str().unwrap_or("?"),
                        d["name"].as_str().unwrap_or(""),
                        join(&d["threads"])
                    ));
                }
                out
            });
        }
        MqttDeviceCmd::Remove { id } => {
            let v = api.json("DELETE", &format!("/v1/mqtt/devices/{}", encode(&id)))?;
            print(as_json, &v, |v| {
                format!("Removed @{}.\n", v["removed"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

pub fn bridge(api: &Api, as_json: bool, cmd: BridgeCmd) -> Result<(), Failure> {
    let BridgeCmd::Status = cmd;
    let v = api.json("GET", "/v1/bridge")?;
    print(as_json, &v, status_table);
    if v["enabled"] == json!(true) && v["connected"] != json!(true) {
        return Err(Failure::api(format!(
            "the bridge is not connected to its broker: {}",
            v["last_error"].as_str().unwrap_or("no error yet")
        )));
    }
    Ok(())
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn status_table(v: &Value) -> String {
    if v["enabled"] != json!(true) {
        return format!(
            "MQTT bridge: disabled (mqtt.enabled = false); {} devices provisioned\n",
            v["devices"]
        );
    }
    let mut out = format!(
        "broker       {} (tls: {})\nconnected    {}\nlast error   {}\ndevices      {}\nup           {} accepted, {} duplicates, {} deferred (retried)\ndown         {} published, {} acked by devices\noutbox       {}\n",
        v["broker"].as_str().unwrap_or("?"),
        v["tls"],
        v["connected"],
        v["last_error"].as_str().filter(|e| !e.is_empty()).unwrap_or("none"),
        v["devices"],
        v["up_accepted"],
        v["up_duplicates"],
        v["up_deferred"],
        v["down_published"],
        v["device_acks"],
        v["outbox_depth"],
    );
    out.push_str("dropped     ");
    for (reason, n) in v["dropped"].as_object().into_iter().flatten() {
        out.push_str(&format!(" {reason}={n}"));
    }
    out.push('\n');
    out
}
