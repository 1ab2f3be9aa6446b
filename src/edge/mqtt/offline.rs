//! `relaybox mqtt-device add|list|remove`: provisioning on the data directory while the relay
//! is stopped (sled locks the directory, so a running relay is detected and named). Groups
//! are joined, and their members told, when the relay starts with the bridge enabled.

use clap::{Args, Subcommand};

use super::provision;
use crate::config::Config;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct MqttDeviceArgs {
    #[command(subcommand)]
    pub cmd: MqttDeviceCmd,
}

#[derive(Subcommand, Debug)]
pub enum MqttDeviceCmd {
    /// Provision a device: the account @ID, a member of each --thread group.
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
    /// List provisioned devices.
    List,
    /// Remove a device (its keys, outbox and account device).
    Remove { id: String },
}

fn open(cfg: &Config) -> Result<Store, String> {
    Store::open(&cfg.relay.data_dir).map_err(|e| {
        let text = e.to_string();
        if text.contains("lock")
            || text.contains("WouldBlock")
            || text.contains("Resource temporarily unavailable")
        {
            format!(
                "the relay is running on {} (its database is locked); stop it first",
                cfg.relay.data_dir.display()
            )
        } else {
            format!(
                "opening the database in {}: {text}",
                cfg.relay.data_dir.display()
            )
        }
    })
}

/// Runs the command; returns the exit code.
pub fn run(cfg: &Config, args: MqttDeviceArgs) -> i32 {
    let store = match open(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let dir = &cfg.relay.data_dir;
    let result = match args.cmd {
        MqttDeviceCmd::Add { id, name, threads } => {
            provision::add(&store, dir, &id, &name, &threads).map(|id| {
                println!(
                    "provisioned @{id}: publish to {p}/dev/{id}/up, subscribe to {p}/dev/{id}/down",
                    p = cfg.mqtt.prefix
                );
            })
        }
        MqttDeviceCmd::Remove { id } => provision::remove(&store, dir, &id).map(|()| {
            println!("removed @{id}");
        }),
        MqttDeviceCmd::List => store
            .mqtt_devices()
            .map(|list| {
                for (id, rec) in list {
                    println!(
                        "@{id}\tname={:?}\tthreads={}\tjoined={}",
                        rec.name,
                        rec.threads.join(","),
                        rec.joined.join(",")
                    );
                }
            })
            .map_err(provision::ProvisionError::from),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
