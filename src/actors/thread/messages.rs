//! Every message the `Thread` actor accepts.

use std::collections::BTreeSet;

use actix::prelude::*;

use super::GroupError;
use crate::ids::{AccountId, DeviceId};
use crate::store::GroupRecord;
use crate::wire::messages::GroupOp;

/// Change membership or subject. Answers with the record after the change and the accounts
/// to tell (members before and after, so removed members learn of their removal).
#[derive(Message)]
#[rtype(result = "Result<(GroupRecord, Vec<AccountId>), GroupError>")]
pub struct Update {
    pub actor: AccountId,
    pub op: GroupOp,
    pub accounts: Vec<AccountId>,
    pub subject: String,
    /// Upper bound on members (config).
    pub max_members: usize,
    /// The relay's operator acts (provisioning a bridged device): admin rights without
    /// membership.
    pub by_operator: bool,
}

/// The group as a member sees it.
#[derive(Message)]
#[rtype(result = "Result<GroupRecord, GroupError>")]
pub struct Info {
    pub asker: AccountId,
}

/// May `sender` send with envelopes for exactly `addressed` (account, device) pairs? They must
/// be every device of every member except the sending device.
#[derive(Message)]
#[rtype(result = "Result<(), GroupError>")]
pub struct CheckSend {
    pub sender: DeviceId,
    pub addressed: BTreeSet<(String, u32)>,
}

/// The members, for ephemeral fan-out (chat states). Answers only a member.
#[derive(Message)]
#[rtype(result = "Result<Vec<AccountId>, GroupError>")]
pub struct Members {
    pub asker: AccountId,
}
