//! Provisioning an MQTT device: the account `@{id}` with device 0, whose Noise and end-to-end
//! keys the relay holds under `<data_dir>/mqtt/devices/{id}/`, and the groups it takes part in.
//!
//! Registration happens directly in the store (no code loop-back: the operator vouches for
//! the device). Joining groups goes through each group's `Thread` actor, so members are told;
//! groups not joined yet (provisioned while the relay was stopped) are joined when the bridge
//! starts.

use std::path::{Path, PathBuf};

use crate::actors::thread;
use crate::client::state::State;
use crate::edge::RelayCtx;
use crate::ids::{AccountId, Handle};
use crate::store::{MqttDeviceRecord, Store};
use crate::wire::messages::PresencePrivacy;

/// Longest device name, in characters (what an operator counts, and what the operator API's
/// description can state).
pub const MAX_NAME_CHARS: usize = 64;
/// Most groups one device is provisioned in.
pub const MAX_THREADS: usize = 32;

/// Why a device cannot be provisioned or removed. All the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("device id: {0}")]
    BadId(#[from] crate::ids::BadHandle),
    #[error("device {0} is already provisioned (remove it first)")]
    Exists(String),
    #[error("device {0} is not provisioned")]
    Unknown(String),
    #[error("the account @{0} already exists and is not a bridged device")]
    AccountTaken(String),
    #[error("group {0:?} does not exist")]
    UnknownGroup(String),
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("at most {MAX_THREADS} groups per device")]
    TooManyThreads,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("device state: {0:#}")]
    State(anyhow::Error),
}

/// Where the relay keeps the device's client state (Noise key, Olm account and sessions).
pub fn home(data_dir: &Path, id: &Handle) -> PathBuf {
    data_dir.join("mqtt").join("devices").join(id.as_str())
}

/// Registers a device in `store`. Groups are joined by the bridge ([`join_threads`]).
pub fn add(
    store: &Store,
    data_dir: &Path,
    id: &str,
    name: &str,
    threads: &[String],
) -> Result<Handle, ProvisionError> {
    let id = Handle::parse(id)?;
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ProvisionError::NameTooLong);
    }
    if threads.len() > MAX_THREADS {
        return Err(ProvisionError::TooManyThreads);
    }
    if store.mqtt_device(&id)?.is_some() {
        return Err(ProvisionError::Exists(id.to_string()));
    }
    let account = AccountId::from_handle(&id);
    // A business entity's handle is an account without devices: taken all the same.
    if store.account_exists(&account)? || store.entity_get(&account)?.is_some() {
        return Err(ProvisionError::AccountTaken(id.to_string()));
    }
    for t in threads {
        if !thread::is_group_id(t) || store.group(t)?.is_none() {
            return Err(ProvisionError::UnknownGroup(t.chars().take(64).collect()));
        }
    }
    let dir = home(data_dir, &id);
    crate::files::create_private_dir(&dir).map_err(ProvisionError::State)?;
    let mut state = State::load_or_new(&dir, "").map_err(ProvisionError::State)?;
    state.account = Some(account.to_string());
    state.device = 0;
    state.save().map_err(ProvisionError::State)?;
    let mut threads = threads.to_vec();
    threads.dedup();
    let rec = MqttDeviceRecord {
        name: name.to_owned(),
        threads,
        joined: Vec::new(),
        created_at_ms: crate::clock::now_ms(),
    };
    // Bridge record first: a crash before the account exists leaves a record the bridge
    // skips (its device task cannot log in) and `remove` clears.
    store.mqtt_device_put(&id, &rec)?;
    store.register_primary(&account, state.noise.public, rec.created_at_ms)?;
    // A machine's presence is not private: everyone who has it in their contacts sees it.
    store.privacy_set(
        &account,
        u8::try_from(PresencePrivacy::Everyone as i32).unwrap_or(0),
    )?;
    store.flush()?;
    Ok(id)
}

/// Removes a device's bridge records and its account's device (people's clients stop
/// addressing it). Its group memberships stay until a group admin removes it.
pub fn remove(store: &Store, data_dir: &Path, id: &str) -> Result<(), ProvisionError> {
    let id = Handle::parse(id)?;
    if !store.mqtt_device_remove(&id)? {
        return Err(ProvisionError::Unknown(id.to_string()));
    }
    let account = AccountId::from_handle(&id);
    store.unlink(&crate::ids::DeviceId::new(account, 0))?;
    store.flush()?;
    let _ = std::fs::remove_dir_all(home(data_dir, &id));
    Ok(())
}

/// Joins the device to the groups it is provisioned in but not yet a member of.
pub async fn join_threads(
    ctx: &RelayCtx,
    id: &Handle,
    mut rec: MqttDeviceRecord,
) -> MqttDeviceRecord {
    let account = AccountId::from_handle(id);
    let pending: Vec<String> = rec
        .threads
        .iter()
        .filter(|t| !rec.joined.contains(t))
        .cloned()
        .collect();
    for group in pending {
        match crate::edge::session::operator_add(ctx, &group, &account).await {
            Ok(()) => {
                tracing::info!(device = %id, group = %group, "Bridged device joined its group.");
                rec.joined.push(group);
            }
            Err(e) => {
                tracing::error!(device = %id, group = %group, error = %e, "Joining the bridged device to its group failed.");
            }
        }
    }
    if let Err(e) = ctx.store.mqtt_device_put(id, &rec) {
        tracing::error!(device = %id, error = %e, "Recording the device's groups failed.");
    }
    rec
}
