//! The `Thread` actor: one per group. Owns the group's membership (subject, members, admins,
//! version) and serialises every change and every send check against it, so a send either
//! sees a member or does not, never half of a change. State is written through to the store.
//! Does not own delivery (device actors do) nor announcements' transport (the caller queues
//! them and waits for durability).

mod handlers;
pub mod messages;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

pub use messages::*;

use super::Directory;
use crate::ids::AccountId;
use crate::store::{GroupRecord, Store, StoreError};

pub use crate::ids::{is_group_id, GROUP_ID_PREFIX};
/// Longest group subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 200;
/// A thread actor with no traffic stops after this long.
const IDLE_STOP: Duration = Duration::from_secs(120);

/// Why a group request failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group. (client's fault)
    #[error("no such group")]
    Unknown,
    /// The caller is not a member. (client's fault)
    #[error("you are not a member of this group")]
    NotMember,
    /// The caller is not an admin. (client's fault)
    #[error("only a group admin may do that")]
    NotAdmin,
    /// A named account is not registered. (client's fault)
    #[error("account {0} is not registered")]
    UnknownAccount(String),
    /// A field is out of bounds. (client's fault)
    #[error("{0}")]
    Invalid(String),
    /// The envelopes do not match the members' devices: every member's current devices.
    #[error("envelopes do not match the members' devices")]
    Mismatch(Vec<(String, Vec<u32>)>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Thread {
    /// The group id.
    id: String,
    store: Store,
    directory: Directory,
    /// The group as stored.
    record: GroupRecord,
    /// Last message handled; drives the idle stop.
    last_active: Instant,
}

impl Thread {
    pub fn new(id: String, record: GroupRecord, store: Store, directory: Directory) -> Self {
        Self {
            id,
            store,
            directory,
            record,
            last_active: Instant::now(),
        }
    }

    fn require_member(&self, who: &AccountId) -> Result<bool, GroupError> {
        self.record
            .members
            .get(who.as_str())
            .copied()
            .ok_or(GroupError::NotMember)
    }
}

/// A new group id: the prefix and 16 random bytes in hex.
pub fn new_group_id() -> String {
    format!(
        "{GROUP_ID_PREFIX}{}",
        hex::encode(rand::random::<[u8; 16]>())
    )
}

/// A new group record with `creator` as admin and `members`.
pub fn new_record(
    creator: &AccountId,
    subject: &str,
    members: &[AccountId],
    now_ms: u64,
) -> GroupRecord {
    let mut m: BTreeMap<String, bool> = members.iter().map(|a| (a.to_string(), false)).collect();
    m.insert(creator.to_string(), true);
    GroupRecord {
        subject: subject.to_owned(),
        members: m,
        version: 1,
        created_at_ms: now_ms,
    }
}

impl Actor for Thread {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        super::start_up(ctx, IDLE_STOP);
    }
}

impl super::Virtual for Thread {
    fn idle_for(&self, idle_stop: Duration) -> bool {
        self.last_active.elapsed() >= idle_stop
    }

    fn leave_directory(&self, ctx: &mut Context<Self>) {
        self.directory.forget_thread(&self.id, &ctx.address());
    }
}

#[cfg(test)]
mod tests;
