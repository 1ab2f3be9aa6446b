//! Business entities: the entity record (handle, phone alias, administrator, agents, policy)
//! and its customer threads (open or closed, assigned agent, assignment history). Ids and
//! times only: the relay never holds what customers and agents say.
//!
//! Read-modify-write sequences are serialised by the caller (`actors::entity`); this file
//! offers single-key reads and writes, each behind the write gate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, encode, keys, Store, StoreError};
use crate::ids::AccountId;

const ENTITY_TREE: &str = "entity_record";
const THREAD_TREE: &str = "entitycustomer_thread";

/// Most assignment history entries kept per thread (the oldest are dropped).
pub const MAX_THREAD_HISTORY: usize = 64;

/// How a thread is assigned when the administrator has been offline long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignPolicy {
    /// Only the administrator assigns.
    Manual,
    /// The next agent in account order, cycling.
    RoundRobin,
    /// The agent with the fewest open threads (account order breaks ties).
    LeastLoaded,
}

impl AssignPolicy {
    /// Parses `manual`, `round-robin` or `least-loaded`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "manual" => Some(Self::Manual),
            "round-robin" => Some(Self::RoundRobin),
            "least-loaded" => Some(Self::LeastLoaded),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::RoundRobin => "round-robin",
            Self::LeastLoaded => "least-loaded",
        }
    }
}

/// One business entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// `@name`.
    pub handle: String,
    /// E.164 alias customers may address instead of the handle; empty if none.
    pub phone: String,
    pub display_name: String,
    /// The administrator's account.
    pub admin: String,
    /// Agent account → display name shown to customers as attribution.
    pub agents: BTreeMap<String, String>,
    pub policy: AssignPolicy,
    /// Customer messages of assigned threads also go to the administrator's devices.
    pub copy_admin: bool,
    /// Overrides `entities.auto_assign_after` for this entity.
    pub auto_assign_after_ms: Option<u64>,
    /// Round-robin position: the number of automatic assignments made so far.
    pub next_round_robin: u64,
    pub created_ms: u64,
}

/// One event in a thread's routing history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStep {
    pub at_ms: u64,
    /// `opened`, `assigned`, `released`, `closed`, `agent-removed`.
    pub what: String,
    /// The agent the thread went to, if any.
    pub agent: Option<String>,
    /// Who did it: an account, `operator`, or `policy`.
    pub by: String,
}

/// One customer thread of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityThreadRecord {
    pub open: bool,
    /// The assigned agent; `None` routes the thread to the administrator.
    pub agent: Option<String>,
    pub opened_ms: u64,
    pub updated_ms: u64,
    pub history: Vec<RoutingStep>,
}

impl EntityThreadRecord {
    /// Appends a step, keeping at most [`MAX_THREAD_HISTORY`].
    pub fn step(&mut self, at_ms: u64, what: &str, by: &str) {
        self.updated_ms = at_ms;
        self.history.push(RoutingStep {
            at_ms,
            what: what.to_owned(),
            agent: self.agent.clone(),
            by: by.to_owned(),
        });
        if self.history.len() > MAX_THREAD_HISTORY {
            let extra = self.history.len() - MAX_THREAD_HISTORY;
            self.history.drain(..extra);
        }
    }
}

/// The phone numbers that alias an entity (the keys of `phone_entity`), kept in step with it
/// by `entity_create`, its only writer: a send to a person's phone is answered from memory.
/// Entities are few (a chain's business accounts). Loaded when the store opens.
#[derive(Clone, Default)]
pub(super) struct EntityPhones(
    std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
);

impl EntityPhones {
    pub(super) fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut phones = std::collections::HashSet::new();
        for k in tree.iter().keys() {
            let k = k?;
            // A key that is not UTF-8 names no account (phone_entity holds phone numbers).
            if let Ok(p) = std::str::from_utf8(&k) {
                phones.insert(p.to_owned());
            }
        }
        Ok(Self(std::sync::Arc::new(std::sync::RwLock::new(phones))))
    }
}

impl Store {
    /// Creates an entity; `false` if the handle is taken. The phone alias is written first
    /// so that a crash leaves at most an alias without an entity, which resolves to nothing.
    pub fn entity_create(&self, rec: &EntityRecord) -> Result<bool, StoreError> {
        let _gate = self.writing();
        let key = rec.handle.as_bytes();
        if self.t.entity_record.contains_key(key)? {
            return Ok(false);
        }
        if !rec.phone.is_empty() {
            self.t
                .phone_entity
                .insert(rec.phone.as_bytes(), rec.handle.as_bytes())?;
            self.entity_phones
                .0
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rec.phone.clone());
        }
        let created = self
            .t
            .entity_record
            .compare_and_swap(key, None as Option<&[u8]>, Some(encode(rec)))?
            .is_ok();
        Ok(created)
    }

    /// Replaces an existing entity's record.
    pub fn entity_put(&self, rec: &EntityRecord) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t
            .entity_record
            .insert(rec.handle.as_bytes(), encode(rec))?;
        Ok(())
    }

    pub fn entity_get(&self, handle: &AccountId) -> Result<Option<EntityRecord>, StoreError> {
        self.t
            .entity_record
            .get(handle.as_str().as_bytes())?
            .map(|v| decode(ENTITY_TREE, &v))
            .transpose()
    }

    /// The entity whose phone alias is `phone`.
    pub fn entity_by_phone(&self, phone: &AccountId) -> Result<Option<EntityRecord>, StoreError> {
        // Every 1:1 send asks; almost every phone is a person's.
        let known = self
            .entity_phones
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(phone.as_str());
        if !known {
            return Ok(None);
        }
        let Some(h) = self.t.phone_entity.get(phone.as_str().as_bytes())? else {
            return Ok(None);
        };
        let handle = std::str::from_utf8(&h)
            .ok()
            .and_then(|s| AccountId::parse(s).ok())
            .ok_or_else(|| super::corrupt("phone_entity", "not a handle"))?;
        self.entity_get(&handle)
    }

    /// Every entity, in handle order.
    pub fn entity_list(&self) -> Result<Vec<EntityRecord>, StoreError> {
        self.t
            .entity_record
            .iter()
            .values()
            .map(|v| decode(ENTITY_TREE, &v?))
            .collect()
    }

    pub fn entity_thread_get(
        &self,
        entity: &AccountId,
        customer: &AccountId,
    ) -> Result<Option<EntityThreadRecord>, StoreError> {
        self.t
            .entitycustomer_thread
            .get(keys::account_item(entity, customer.as_str().as_bytes()))?
            .map(|v| decode(THREAD_TREE, &v))
            .transpose()
    }

    pub fn entity_thread_put(
        &self,
        entity: &AccountId,
        customer: &AccountId,
        rec: &EntityThreadRecord,
    ) -> Result<(), StoreError> {
        let _gate = self.writing();
        self.t.entitycustomer_thread.insert(
            keys::account_item(entity, customer.as_str().as_bytes()),
            encode(rec),
        )?;
        Ok(())
    }

    /// Every thread of `entity` with its customer, in customer order.
    pub fn entity_threads(
        &self,
        entity: &AccountId,
    ) -> Result<Vec<(AccountId, EntityThreadRecord)>, StoreError> {
        let prefix = keys::account_prefix(entity);
        let mut out = Vec::new();
        for kv in self.t.entitycustomer_thread.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let customer = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| AccountId::parse(s).ok())
                .ok_or_else(|| super::corrupt(THREAD_TREE, "bad customer in key"))?;
            out.push((customer, decode(THREAD_TREE, &v)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(handle: &str) -> EntityRecord {
        EntityRecord {
            handle: handle.into(),
            phone: "+14155550199".into(),
            display_name: "Acme".into(),
            admin: "+14155550100".into(),
            agents: BTreeMap::new(),
            policy: AssignPolicy::Manual,
            copy_admin: false,
            auto_assign_after_ms: None,
            next_round_robin: 0,
            created_ms: 1,
        }
    }

    #[test]
    fn an_entity_is_created_once_and_found_by_handle_and_phone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.entity_create(&rec("@acme")).unwrap());
        assert!(!s.entity_create(&rec("@acme")).unwrap());
        let h = AccountId::parse("@acme").unwrap();
        assert_eq!(s.entity_get(&h).unwrap().unwrap().display_name, "Acme");
        let p = AccountId::parse("+14155550199").unwrap();
        assert_eq!(s.entity_by_phone(&p).unwrap().unwrap().handle, "@acme");
        assert_eq!(s.entity_list().unwrap().len(), 1);
    }

    #[test]
    fn threads_are_listed_per_entity_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let e = AccountId::parse("@acme").unwrap();
        let other = AccountId::parse("@other").unwrap();
        let c = AccountId::parse("+14155550111").unwrap();
        let mut t = EntityThreadRecord {
            open: true,
            agent: None,
            opened_ms: 1,
            updated_ms: 1,
            history: Vec::new(),
        };
        for n in 0..100 {
            t.step(n, "assigned", "policy");
        }
        assert_eq!(t.history.len(), MAX_THREAD_HISTORY);
        s.entity_thread_put(&e, &c, &t).unwrap();
        s.entity_thread_put(&other, &c, &t).unwrap();
        let list = s.entity_threads(&e).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, c);
    }
}
