//! The MQTT bridge for operators: provision, list and remove devices, and the bridge's state.
//! Provisioning runs on the relay's arbiter (it starts the device's task and joins groups
//! through their `Thread` actors, which live there).

use std::sync::atomic::Ordering;

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ErrorBody;
use super::{AdminError, Object, State};
use crate::edge::mqtt::provision::{self, ProvisionError};

pub(super) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(list_mqtt_devices)
        .service(add_mqtt_device)
        .service(remove_mqtt_device)
        .service(bridge_state);
}

/// The body of `POST /v1/mqtt/devices`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    /// The device id, also its account `@id` and its topics' segment.
    #[schema(pattern = "^[a-z0-9][a-z0-9.-]{0,31}$")]
    id: String,
    /// A name for people (at most 64 characters).
    #[serde(default)]
    #[schema(max_length = 64)]
    name: String,
    /// Group ids the device takes part in (at most 32).
    #[serde(default)]
    #[schema(max_items = 32)]
    threads: Vec<String>,
}

/// A provisioned MQTT device.
#[derive(Serialize, ToSchema)]
struct MqttDevice {
    id: String,
    account: String,
    name: String,
    threads: Vec<String>,
    joined: Vec<String>,
    created_at_ms: u64,
    up_topic: String,
    down_topic: String,
}

fn row(prefix: &str, id: &str, rec: crate::store::MqttDeviceRecord) -> MqttDevice {
    MqttDevice {
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
        ProvisionError::BadId(_) => AdminError::bad("id", e.to_string()),
        ProvisionError::Exists(_) | ProvisionError::AccountTaken(_) => {
            AdminError::Conflict(e.to_string())
        }
        ProvisionError::UnknownGroup(_) => AdminError::NotFound(e.to_string()),
        ProvisionError::TooManyThreads => AdminError::bad("threads", e.to_string()),
        ProvisionError::NameTooLong => AdminError::bad("name", e.to_string()),
        ProvisionError::Unknown(_) => AdminError::NotFound(e.to_string()),
        ProvisionError::Store(e) => e.into(),
        ProvisionError::State(_) => AdminError::Internal(e.to_string()),
    }
}

/// Every provisioned MQTT device.
#[derive(Serialize, ToSchema)]
struct DeviceList {
    devices: Vec<MqttDevice>,
}

/// GET /v1/mqtt/devices: every provisioned device.
#[utoipa::path(
    tag = "mqtt",
    responses((status = 200, description = "Every provisioned device", body = DeviceList)),
)]
#[get("/mqtt/devices")]
async fn list_mqtt_devices(state: State) -> Result<HttpResponse, AdminError> {
    let prefix = &state.ctx.cfg.mqtt.prefix;
    let rows: Vec<MqttDevice> = state
        .ctx
        .store
        .mqtt_devices()?
        .into_iter()
        .map(|(id, rec)| row(prefix, id.as_str(), rec))
        .collect();
    Ok(HttpResponse::Ok().json(DeviceList { devices: rows }))
}

/// POST /v1/mqtt/devices: provisions a device (`{"id", "name", "threads"}`), joins it to its
/// groups (members are told) and, with the bridge running, starts serving its topics.
#[utoipa::path(
    tag = "mqtt",
    request_body = AddDevice,
    responses(
        (status = 201, description = "The device was provisioned", body = MqttDevice,
            headers(("Location" = String, description = "The device's route, /v1/mqtt/devices/{id}"))),
        (status = 400, description = "A malformed body or field", body = ErrorBody),
        (status = 404, description = "A group in `threads` does not exist", body = ErrorBody),
        (status = 409, description = "The id is already provisioned or names another account", body = ErrorBody),
        (status = 503, description = "The relay is shutting down", body = ErrorBody),
    ),
)]
#[post("/mqtt/devices")]
async fn add_mqtt_device(
    state: State,
    body: Object<AddDevice>,
) -> Result<HttpResponse, AdminError> {
    let body = body.0;
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
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/v1/mqtt/devices/{id}"),
        ))
        .json(row(&state.ctx.cfg.mqtt.prefix, id.as_str(), rec)))
}

/// A removed MQTT device.
#[derive(Serialize, ToSchema)]
struct RemovedDevice {
    removed: String,
}

/// DELETE /v1/mqtt/devices/{id}: removes the device, its keys, outbox and account device.
#[utoipa::path(
    tag = "mqtt",
    params(("id" = String, Path, description = "The device id", example = "sensor-1", pattern = "^[a-z0-9][a-z0-9.-]{0,31}$")),
    responses(
        (status = 200, description = "The device was removed", body = RemovedDevice),
        (status = 400, description = "Not a device id", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
)]
#[delete("/mqtt/devices/{id}")]
async fn remove_mqtt_device(
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = path.into_inner();
    provision::remove(&state.ctx.store, &state.data_dir, &id).map_err(refusal)?;
    if let (Some(b), Ok(h)) = (&state.mqtt, crate::ids::Handle::parse(&id)) {
        b.detach(h);
    }
    tracing::info!(device = %id, "MQTT device removed.");
    Ok(HttpResponse::Ok().json(RemovedDevice { removed: id }))
}

/// The MQTT bridge's state. Without `mqtt.enabled`, only `enabled` and `devices`.
#[derive(Serialize, ToSchema)]
struct BridgeState {
    enabled: bool,
    /// Provisioned devices.
    devices: usize,
    /// `host:port` of the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected: Option<bool>,
    /// Empty when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_accepted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_deferred: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    down_published: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_acks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox_depth: Option<u64>,
    /// Messages dropped as bad input, by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<std::collections::BTreeMap<String, u64>>,
}

/// GET /v1/bridge: the MQTT bridge's state, counters and last error.
#[utoipa::path(
    tag = "mqtt",
    responses((status = 200, description = "The bridge's state", body = BridgeState)),
)]
#[get("/bridge")]
async fn bridge_state(state: State) -> Result<HttpResponse, AdminError> {
    let cfg = &state.ctx.cfg.mqtt;
    let devices = state.ctx.store.mqtt_devices()?.len();
    let Some(b) = &state.mqtt else {
        return Ok(HttpResponse::Ok().json(BridgeState {
            enabled: false,
            devices,
            broker: None,
            tls: None,
            prefix: None,
            connected: None,
            last_error: None,
            connection_errors: None,
            up_accepted: None,
            up_duplicates: None,
            up_deferred: None,
            down_published: None,
            device_acks: None,
            outbox_depth: None,
            dropped: None,
        }));
    };
    let s = &b.stats;
    Ok(HttpResponse::Ok().json(BridgeState {
        enabled: true,
        devices,
        broker: Some(format!("{}:{}", cfg.host, cfg.port)),
        tls: Some(cfg.tls),
        prefix: Some(cfg.prefix.clone()),
        connected: Some(s.connected.load(Ordering::Relaxed)),
        last_error: Some(s.last_error()),
        connection_errors: Some(s.connection_errors.load(Ordering::Relaxed)),
        up_accepted: Some(s.up_accepted.load(Ordering::Relaxed)),
        up_duplicates: Some(s.up_duplicates.load(Ordering::Relaxed)),
        up_deferred: Some(s.up_deferred.load(Ordering::Relaxed)),
        down_published: Some(s.down_published.load(Ordering::Relaxed)),
        device_acks: Some(s.acks.load(Ordering::Relaxed)),
        outbox_depth: Some(s.outbox_depth.load(Ordering::Relaxed)),
        dropped: Some(
            s.dropped_all()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        ),
    }))
}
