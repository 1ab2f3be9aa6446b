//! Every message the `Entity` actor accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use super::{Change, EntityError, Who};
use crate::ids::AccountId;
use crate::store::{AssignPolicy, EntityRecord, EntityThreadRecord};

/// A customer writes to the entity (or asks where to write): opens or reopens the customer's
/// thread, assigns it by policy if the administrator has been offline long enough, and
/// answers the accounts whose devices receive the customer's messages.
#[derive(Message)]
#[rtype(result = "Result<Routed, EntityError>")]
pub struct Route {
    pub customer: AccountId,
    /// The administrator has a live session now.
    pub admin_online: bool,
    /// `entities.auto_assign_after` (the entity's own setting wins).
    pub auto_assign_after: Duration,
}

/// Where a customer's messages go now.
#[derive(Debug, Clone)]
pub struct Routed {
    pub recipients: Vec<AccountId>,
    /// An automatic assignment this routing made.
    pub change: Option<Change>,
}

/// May `sender` answer `customer` as the entity? Answers the attribution (the agent's display
/// name, or the entity's for its administrator).
#[derive(Message)]
#[rtype(result = "Result<String, EntityError>")]
pub struct CheckReply {
    pub sender: AccountId,
    pub customer: AccountId,
}

/// Assign (or reassign) `customer`'s thread to `agent`. Administrator or operator only.
#[derive(Message)]
#[rtype(result = "Result<Change, EntityError>")]
pub struct Assign {
    pub by: Who,
    pub customer: AccountId,
    pub agent: AccountId,
}

/// Route `customer`'s thread back to the administrator. Administrator or operator only.
#[derive(Message)]
#[rtype(result = "Result<Change, EntityError>")]
pub struct Release {
    pub by: Who,
    pub customer: AccountId,
}

/// Close `customer`'s thread: the administrator, an operator, or its assigned agent.
#[derive(Message)]
#[rtype(result = "Result<Change, EntityError>")]
pub struct Close {
    pub by: Who,
    pub customer: AccountId,
}

/// Add `agent` (or rename it). Administrator or operator only.
#[derive(Message)]
#[rtype(result = "Result<EntityRecord, EntityError>")]
pub struct AddAgent {
    pub by: Who,
    pub agent: AccountId,
    pub display_name: String,
    pub max_agents: usize,
}

/// Remove `agent`; its threads return to the administrator at once.
#[derive(Message)]
#[rtype(result = "Result<(EntityRecord, Vec<Change>), EntityError>")]
pub struct RemoveAgent {
    pub by: Who,
    pub agent: AccountId,
}

/// Change the assignment policy, the copy flag or the automatic delay. Administrator or
/// operator only; `None` leaves a setting as it is.
#[derive(Message)]
#[rtype(result = "Result<EntityRecord, EntityError>")]
pub struct Configure {
    pub by: Who,
    pub policy: Option<AssignPolicy>,
    pub copy_admin: Option<bool>,
    pub display_name: Option<String>,
    pub auto_assign_after_ms: Option<u64>,
}

/// The entity and the threads `asker` may see: all for the administrator or an operator, its
/// own for an agent; only `customer`'s thread if given (an agent asking for another agent's
/// thread is refused with NotAssigned).
#[derive(Message)]
#[rtype(result = "Result<EntityView, EntityError>")]
pub struct View {
    pub asker: Who,
    pub customer: Option<AccountId>,
}

/// What [`View`] answers.
#[derive(Debug, Clone)]
pub struct EntityView {
    pub record: EntityRecord,
    pub threads: Vec<(AccountId, EntityThreadRecord)>,
    /// Open threads per agent.
    pub load: BTreeMap<String, u32>,
}
