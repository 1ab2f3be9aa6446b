//! The directory: maps device ids to live `Device` actors, activating one from the store on
//! first use. Actors remove themselves when they stop for idleness.
//!
//! A plain map behind a mutex rather than an actor: a lookup is a few hundred nanoseconds and
//! needs no mailbox hop. An actor runs on the thread that first looked it up (the relay's
//! arbiter for TCP sessions and the log's commits, an HTTP worker for WebSocket and
//! chunked-HTTP sessions; see `app.rs`), so the lock is shared by a handful of threads and held
//! only for a map operation.

use crate::maps::FastMap as HashMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::device::{Device, DeviceSettings, Durable, Ephemeral};
use super::entity::Entity;
use super::notifier::Notifier;
use super::thread::Thread;
use crate::ids::{AccountId, DeviceId};
use crate::store::{QueueItem, QueueRecord, Store, StoreError};
use crate::wire::messages::ServerFrame;

#[derive(Clone)]
pub struct Directory {
    live: Arc<Mutex<HashMap<DeviceId, Addr<Device>>>>,
    threads: Arc<Mutex<HashMap<String, Addr<Thread>>>>,
    entities: Arc<Mutex<HashMap<AccountId, Addr<Entity>>>>,
    store: Store,
    settings: DeviceSettings,
    notifier: Notifier,
}

/// Why a message could not be handed to a device actor.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The actor kept stopping under us (shutdown).
    #[error("device actor unavailable")]
    Unavailable,
}

impl Directory {
    pub fn new(store: Store, settings: DeviceSettings, notifier: Notifier) -> Self {
        Self {
            live: Arc::default(),
            threads: Arc::default(),
            entities: Arc::default(),
            store,
            settings,
            notifier,
        }
    }

    /// The push notifier (device actors call it when something waits for an offline device).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The group's actor, activated from the store; `None` if there is no such group.
    pub fn thread(&self, id: &str) -> Result<Option<Addr<Thread>>, StoreError> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = threads.get(id).filter(|a| a.connected()) {
            return Ok(Some(addr.clone()));
        }
        let Some(record) = self.store.group(id)? else {
            return Ok(None);
        };
        let addr = Thread::new(id.to_owned(), record, self.store.clone(), self.clone()).start();
        threads.insert(id.to_owned(), addr.clone());
        Ok(Some(addr))
    }

    /// Called by a thread actor that stops.
    pub fn forget_thread(&self, id: &str, addr: &Addr<Thread>) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if threads.get(id) == Some(addr) {
            threads.remove(id);
        }
    }

    /// The business entity's actor, activated from the store; `None` if `id` (a handle or
    /// an entity's phone alias) names no entity.
    pub fn entity(&self, id: &AccountId) -> Result<Option<(AccountId, Addr<Entity>)>, StoreError> {
        let record = match id.handle() {
            Some(_) => self.store.entity_get(id)?,
            None => self.store.entity_by_phone(id)?,
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let Ok(handle) = AccountId::parse(&record.handle) else {
            return Ok(None);
        };
        let mut entities = self.entities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = entities.get(&handle).filter(|a| a.connected()) {
            return Ok(Some((handle, addr.clone())));
        }
        let addr = Entity::new(handle.clone(), record, self.store.clone(), self.clone()).start();
        entities.insert(handle.clone(), addr.clone());
        Ok(Some((handle, addr)))
    }

    /// Called by an entity actor that stops.
    pub fn forget_entity(&self, id: &AccountId, addr: &Addr<Entity>) {
        let mut entities = self.entities.lock().unwrap_or_else(|p| p.into_inner());
        if entities.get(id) == Some(addr) {
            entities.remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Addr<Device>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's actor, activated if it is not running.
    pub fn get(&self, id: &DeviceId) -> Addr<Device> {
        let mut live = self.lock();
        if let Some(addr) = live.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let dev = Device::new(
            id.clone(),
            self.store.clone(),
            self.clone(),
            self.settings.clone(),
        );
        let addr = dev.start();
        live.insert(id.clone(), addr.clone());
        addr
    }

    /// The device's actor only if it is running (for ephemeral traffic to online devices).
    pub fn get_live(&self, id: &DeviceId) -> Option<Addr<Device>> {
        self.lock().get(id).filter(|a| a.connected()).cloned()
    }

    /// Called by an actor that stops: forget it unless a newer actor took its place.
    pub fn forget(&self, id: &DeviceId, addr: &Addr<Device>) {
        let mut live = self.lock();
        if live.get(id) == Some(addr) {
            live.remove(id);
        }
    }

    /// Number of live device actors.
    pub fn live_count(&self) -> usize {
        self.lock().len()
    }

    /// Appends to one device's queue (not yet durable; await the barrier before acking).
    /// The device's actor hears of it when the log commits ([`Directory::durable`]).
    pub async fn enqueue(&self, id: &DeviceId, record: QueueRecord) -> Result<u64, DirectoryError> {
        Ok(self.store.queue_push(id, &record)?)
    }

    /// Appends `item` to the queue of every device of `account`, as one log record.
    pub async fn enqueue_account(
        &self,
        account: &AccountId,
        item: QueueItem,
    ) -> Result<(), DirectoryError> {
        let now = crate::clock::now_ms();
        let entries: Vec<(DeviceId, QueueRecord)> = self
            .store
            .devices(account)?
            .into_iter()
            .map(|(no, _)| {
                let rec = QueueRecord {
                    enqueued_at_ms: now,
                    item: item.clone(),
                };
                (DeviceId::new(account.clone(), no), rec)
            })
            .collect();
        if !entries.is_empty() {
            self.store.queue_append(entries)?;
        }
        Ok(())
    }

    /// The log made entries up to `upto` durable, among them entries for `devices`: each
    /// device's actor (activated if needed) delivers them or notifies an offline device.
    pub fn durable(&self, upto: u64, devices: &[DeviceId]) {
        let mut seen = std::collections::HashSet::with_capacity(devices.len());
        for d in devices {
            if seen.insert(d) {
                self.get(d).do_send(Durable { upto });
            }
        }
    }

    /// Sends an ephemeral frame to the device if it is online; drops it otherwise.
    pub fn ephemeral(&self, id: &DeviceId, frame: ServerFrame) {
        if let Some(addr) = self.get_live(id) {
            addr.do_send(Ephemeral { frame });
        }
    }
}
