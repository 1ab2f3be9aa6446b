//! The `Entity` actor: one per business entity (a shop branch whose customers message "the
//! store"). Owns the entity's record (administrator, agents, policy) and serialises every
//! routing decision about its customer threads: which devices a customer's message goes to,
//! assignment to agents (by the administrator, an operator, or the policy), release, close,
//! agent removal, and who may see or answer which thread. State is written through to the
//! store (`store/entities.rs`).
//!
//! It does not own transport: callers queue the payloads and the routing notices it reports
//! ([`Change`]) and wait for the durability barrier before answering (`edge/session/entities.rs`).
//! It never sees content: thread context travels end to end between the administrator's and
//! the agent's devices, and for an automatic assignment there is none (the relay cannot read
//! the history), so the agent starts from the customer's next messages.

mod handlers;
pub mod messages;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

pub use messages::*;

use super::Directory;
use crate::ids::AccountId;
use crate::store::{AssignPolicy, EntityRecord, EntityThreadRecord, Store, StoreError};
use crate::wire::messages::EntityEventKind;

/// Longest entity or agent display name, in characters (what people count, and what the
/// operator API's OpenAPI description can state; at most 256 bytes).
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// An entity actor with no traffic stops after this long.
const IDLE_STOP: Duration = Duration::from_secs(120);

/// Why an entity request failed.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// No entity has that handle or phone alias. (client's fault)
    #[error("no business entity {0}")]
    UnknownEntity(String),
    /// The entity has no thread with that customer. (client's fault)
    #[error("the entity has no thread with {0}")]
    UnknownThread(String),
    /// Only the administrator (or an operator) may do that. (client's fault)
    #[error("only the administrator of {0} may do that")]
    NotAdmin(String),
    /// The caller is an agent and the thread is not assigned to it. (client's fault)
    #[error("the thread with {0} is not assigned to you")]
    NotAssigned(String),
    /// The named account is not an agent of the entity. (client's fault)
    #[error("{0} is not an agent of this entity")]
    NotAgent(String),
    /// The caller is neither the administrator nor an agent. (client's fault)
    #[error("you are not the administrator or an agent of {0}")]
    NotStaff(String),
    /// A field is out of bounds. (client's fault)
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who acts on an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A device session of this account.
    Account(AccountId),
    /// An operator through the admin API.
    Operator,
    /// The entity's assignment policy (the administrator was offline).
    Policy,
}

impl Who {
    /// How the audit log and the thread history name the actor.
    pub fn label(&self) -> String {
        match self {
            Self::Account(a) => a.to_string(),
            Self::Operator => "operator".into(),
            Self::Policy => "policy".into(),
        }
    }
}

/// A change of a thread's routing, for the caller to announce and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub customer: AccountId,
    pub kind: EntityEventKind,
    /// The agent the thread is assigned to now.
    pub agent: Option<String>,
    /// The agent it was assigned to before.
    pub previous: Option<String>,
    pub by: String,
}

pub struct Entity {
    /// The entity's handle.
    id: AccountId,
    store: Store,
    directory: Directory,
    /// The entity as stored.
    record: EntityRecord,
    /// Last message handled; drives the idle stop.
    last_active: Instant,
}

impl Entity {
    pub fn new(id: AccountId, record: EntityRecord, store: Store, directory: Directory) -> Self {
        Self {
            id,
            store,
            directory,
            record,
            last_active: Instant::now(),
        }
    }

    fn is_admin(&self, who: &Who) -> bool {
        match who {
            Who::Operator | Who::Policy => true,
            Who::Account(a) => a.as_str() == self.record.admin,
        }
    }

    fn require_admin(&self, who: &Who) -> Result<(), EntityError> {
        if self.is_admin(who) {
            Ok(())
        } else {
            Err(EntityError::NotAdmin(self.record.handle.clone()))
        }
    }

    fn is_agent(&self, a: &AccountId) -> bool {
        self.record.agents.contains_key(a.as_str())
    }

    fn thread(&self, customer: &AccountId) -> Result<EntityThreadRecord, EntityError> {
        self.store
            .entity_thread_get(&self.id, customer)?
            .ok_or_else(|| EntityError::UnknownThread(customer.to_string()))
    }

    fn put_thread(&self, customer: &AccountId, t: &EntityThreadRecord) -> Result<(), StoreError> {
        self.store.entity_thread_put(&self.id, customer, t)
    }

    /// Open threads per agent (every agent listed, idle ones with 0).
    fn load(&self) -> Result<BTreeMap<String, u32>, StoreError> {
        let mut load: BTreeMap<String, u32> =
            self.record.agents.keys().map(|a| (a.clone(), 0)).collect();
        for (_, t) in self.store.entity_threads(&self.id)? {
            if let (true, Some(a)) = (t.open, &t.agent) {
                if let Some(n) = load.get_mut(a) {
                    *n += 1;
                }
            }
        }
        Ok(load)
    }

    /// The agent the policy picks next, if it picks one.
    fn pick(&mut self) -> Result<Option<String>, StoreError> {
        let agents: Vec<&String> = self.record.agents.keys().collect();
        if agents.is_empty() {
            return Ok(None);
        }
        Ok(match self.record.policy {
            AssignPolicy::Manual => None,
            AssignPolicy::RoundRobin => {
                let n = u64::try_from(agents.len()).unwrap_or(1);
                let i = usize::try_from(self.record.next_round_robin % n).unwrap_or(0);
                agents.get(i).map(|a| (*a).clone())
            }
            AssignPolicy::LeastLoaded => self
                .load()?
                .into_iter()
                .min_by_key(|(a, n)| (*n, a.clone()))
                .map(|(a, _)| a),
        })
    }

    /// The accounts whose devices receive the customer's messages on thread `t`.
    fn recipients(&self, t: &EntityThreadRecord) -> Vec<String> {
        // An agent removed by a crash-interrupted RemoveAgent no longer receives anything.
        let agent = t
            .agent
            .as_ref()
            .filter(|a| self.record.agents.contains_key(*a));
        match agent {
            Some(a) if self.record.copy_admin => vec![a.clone(), self.record.admin.clone()],
            Some(a) => vec![a.clone()],
            None => vec![self.record.admin.clone()],
        }
    }
}

impl Actor for Entity {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        super::start_up(ctx, IDLE_STOP);
    }
}

impl super::Virtual for Entity {
    fn idle_for(&self, idle_stop: Duration) -> bool {
        self.last_active.elapsed() >= idle_stop
    }

    fn leave_directory(&self, ctx: &mut Context<Self>) {
        self.directory.forget_entity(&self.id, &ctx.address());
    }
}

/// Checks a display name: 1..=[`MAX_DISPLAY_NAME_CHARS`] characters, none of the characters
/// [`crate::names`] refuses (controls, bidirectional overrides and marks).
pub fn check_display_name(name: &str) -> Result<(), EntityError> {
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(EntityError::Invalid(format!(
            "a display name is 1..={MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    if let Some(why) = crate::names::refusal("a display name", name) {
        return Err(EntityError::Invalid(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
