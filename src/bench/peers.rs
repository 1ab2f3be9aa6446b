//! The peers: Mosquitto over MQTT (QoS 1) and NATS JetStream, driven by the same generator.

use super::stats::Report;
use super::BenchArgs;

/// MQTT target (rumqttc).
pub async fn mqtt(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    let _ = (addr, args);
    anyhow::bail!("mqtt target: not built yet")
}

/// NATS JetStream target (async-nats).
pub async fn nats(addr: &str, args: &BenchArgs) -> anyhow::Result<Report> {
    let _ = (addr, args);
    anyhow::bail!("nats target: not built yet")
}
