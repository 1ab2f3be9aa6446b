//! The MQTT bridge for operators: provision, list and remove devices, and the bridge's state.
//! Provisioning runs on the relay's arbiter (it starts the device's task and joins groups
//! through their `Thread` actors, which live there).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{AdminError, State};
use crate::edge::mqtt::provision::{self, ProvisionError};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/mqtt/devices", web::get().to(list))
        .route("/mqtt/devices", web::post().to(add))
        .route("/mqtt/devices/{id}", web::delete().to(remove))
        .route("/bridge", web::get().to(bridge));
}

/// The body of `POST /v1/mqtt/devices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    threads: Vec<String>,
}

#[derive(Serialize)]
struct DeviceRow {
    id: String,
    account: String,
    name: String,
    threads: Vec<String>,
    joined: Vec<String>,
    created_at_ms: u64,
    up_topic: String,
    down_topic: String,
}

fn row(prefix: &str, id: &str, rec: crate::store::MqttDeviceRecord) -> DeviceRow {
    DeviceRow {
        id: id.to_owned(),
        account: format!("@{id}"),
        name: rec.name,
        threads: rec.threads,
        joined: rec.joined,
        created_at_ms: rec.created_at_ms,
        up_topic: format!("{prefix}/dev/{id}/up"),
        down_topic: format!("{prefix}/dev/{id}/down"),
    }
}

fn refusal(e: ProvisionError) -> AdminError {
    match e {
        ProvisionError::BadId(_) | ProvisionError::Exists(_) | ProvisionError::AccountTaken(_) => {
            AdminError::bad("id", e.to_string())
        }
        ProvisionError::UnknownGroup(_) | ProvisionError::TooManyThreads => {
            AdminError::bad("threads", e.to_string())
        }
        ProvisionError::NameTooLong => AdminError::bad("name", e.to_string()),
        ProvisionError::Unknown(_) => AdminError::NotFound(e.to_string()),
        ProvisionError::Store(e) => e.into(),
        ProvisionError::State(_) => AdminError::Internal(e.to_string()),
    }
}

/// GET /v1/mqtt/devices: every provisioned device.
async fn list(state: State) -> Result<HttpResponse, AdminError> {
    let prefix = &state.ctx.cfg.mqtt.prefix;
    let rows: Vec<DeviceRow> = state
        .ctx
        .store
        .mqtt_devices()?
        .into_iter()
        .map(|(id, rec)| row(prefix, id.as_str(), rec))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "devices": rows })))
}

/// POST /v1/mqtt/devices: provisions a device (`{"id", "name", "threads"}`), joins it to its
/// groups (members are told) and, with the bridge running, starts serving its topics.
async fn add(state: State, body: web::Json<AddDevice>) -> Result<HttpResponse, AdminError> {
    let body = body.into_inner();
    let ctx = state.ctx.clone();
    let bridge = state.mqtt.clone();
    let data_dir = state.data_dir.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = state.relay.spawn_fn(move || {
        actix_rt::spawn(async move {
            let result = async {
                let id =
                    provision::add(&ctx.store, &data_dir, &body.id, &body.name, &body.threads)?;
                let rec = ctx
                    .store
                    .mqtt_device(&id)?
                    .ok_or_else(|| ProvisionError::Unknown(id.to_string()))?;
                let rec = provision::join_threads(&ctx, &id, rec).await;
                if let Some(b) = &bridge {
                    b.attach(id.clone(), rec.threads.clone());
                }
                Ok::<_, ProvisionError>((id, rec))
            }
            .await;
            let _ = tx.send(result);
        });
    });
    if !sent {
        return Err(AdminError::Unavailable("the relay is shutting down".into()));
    }
    let (id, rec) = rx
        .await
        .map_err(|_| AdminError::Unavailable("the relay is shutting down".into()))?
        .map_err(refusal)?;
    let missing: Vec<&String> = rec
        .threads
        .iter()
        .filter(|t| !rec.joined.contains(t))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(device = %id, groups = ?missing, "Device provisioned, but not every group was joined.");
    }
    tracing::info!(device = %id, bridge = state.mqtt.is_some(), "MQTT device provisioned.");
    Ok(HttpResponse::Created().json(row(&state.ctx.cfg.mqtt.prefix, id.as_str(), rec)))
}

/// DELETE /v1/mqtt/devices/{id}: removes the device, its keys, outbox and account device.
async fn remove(state: State, path: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let id = path.into_inner();
    provision::remove(&state.ctx.store, &state.data_dir, &id).map_err(refusal)?;
    if let (Some(b), Ok(h)) = (&state.mqtt, crate::ids::Handle::parse(&id)) {
        b.detach(h);
    }
    tracing::info!(device = %id, "MQTT device removed.");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": id })))
}

/// GET /v1/bridge: the MQTT bridge's state, counters and last error.
async fn bridge(state: State) -> Result<HttpResponse, AdminError> {
    let cfg = &state.ctx.cfg.mqtt;
    let devices = state.ctx.store.mqtt_devices()?.len();
    let Some(b) = &state.mqtt else {
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "enabled": false,
            "devices": devices,
        })));
    };
    let s = &b.stats;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "enabled": true,
        "broker": format!("{}:{}", cfg.host, cfg.port),
        "tls": cfg.tls,
        "prefix": cfg.prefix,
        "connected": s.connected.load(Ordering::Relaxed),
        "last_error": s.last_error(),
        "connection_errors": s.connection_errors.load(Ordering::Relaxed),
        "devices": devices,
        "up_accepted": s.up_accepted.load(Ordering::Relaxed),
        "up_duplicates": s.up_duplicates.load(Ordering::Relaxed),
        "up_deferred": s.up_deferred.load(Ordering::Relaxed),
        "down_published": s.down_published.load(Ordering::Relaxed),
        "device_acks": s.acks.load(Ordering::Relaxed),
        "outbox_depth": s.outbox_depth.load(Ordering::Relaxed),
        "dropped": s.dropped_all(),
    })))
}
