//! The Entity actor on its own, on a real store: where a customer's messages go, who may
//! answer as the entity, who may assign, and the policy's automatic assignment.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::actors::device::DeviceSettings;
use crate::actors::notifier::Notifier;
use crate::store::{AssignPolicy, EntityRecord};

const ADMIN: &str = "+14155550101";
const AGENT: &str = "+14155550102";
const CUSTOMER: &str = "+14155550103";

fn account(a: &str) -> AccountId {
    AccountId::parse(a).unwrap()
}

/// `@store` with an administrator and one agent, under `policy`.
fn entity(dir: &std::path::Path, policy: AssignPolicy) -> Addr<Entity> {
    let store = Store::open(dir).unwrap();
    for (i, a) in [ADMIN, AGENT, CUSTOMER].into_iter().enumerate() {
        let n = u8::try_from(i + 1).unwrap();
        store.register_primary(&account(a), [n; 32], 0).unwrap();
    }
    let record = EntityRecord {
        handle: "@store".into(),
        phone: String::new(),
        display_name: "The Store".into(),
        admin: ADMIN.into(),
        agents: BTreeMap::from([(AGENT.to_owned(), "Dana".to_owned())]),
        policy,
        copy_admin: false,
        auto_assign_after_ms: None,
        next_round_robin: 0,
        created_ms: 0,
    };
    assert!(store.entity_create(&record).unwrap());
    let settings = DeviceSettings {
        window: 8,
        idle_stop: Duration::from_secs(60),
    };
    let directory = Directory::new(store.clone(), settings, Notifier::disabled());
    Entity::new(account("@store"), record, store, directory).start()
}

fn route(admin_online: bool) -> Route {
    Route {
        customer: account(CUSTOMER),
        admin_online,
        auto_assign_after: Duration::ZERO,
    }
}

#[actix_rt::test]
async fn a_new_customer_reaches_the_administrator_until_a_thread_is_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let entity = entity(dir.path(), AssignPolicy::Manual);
    let routed = entity.send(route(false)).await.unwrap().unwrap();
    assert_eq!(routed.recipients, [account(ADMIN)]);
    assert!(routed.change.is_none(), "manual: no automatic assignment");

    // Only the administrator answers an unassigned thread; the agent is not assigned yet.
    let reply = |sender: &str| CheckReply {
        sender: account(sender),
        customer: account(CUSTOMER),
    };
    assert_eq!(
        entity.send(reply(ADMIN)).await.unwrap().unwrap(),
        "The Store"
    );
    let not_yet = entity.send(reply(AGENT)).await.unwrap();
    assert!(
        matches!(not_yet, Err(EntityError::NotAssigned(_))),
        "{not_yet:?}"
    );
    let stranger = entity.send(reply(CUSTOMER)).await.unwrap();
    assert!(
        matches!(stranger, Err(EntityError::NotStaff(_))),
        "{stranger:?}"
    );

    // An agent may not assign; the administrator may, and the agent then answers as itself.
    let assign = |by: &str| Assign {
        by: Who::Account(account(by)),
        customer: account(CUSTOMER),
        agent: account(AGENT),
    };
    let refused = entity.send(assign(AGENT)).await.unwrap();
    assert!(
        matches!(refused, Err(EntityError::NotAdmin(_))),
        "{refused:?}"
    );
    let change = entity.send(assign(ADMIN)).await.unwrap().unwrap();
    assert_eq!(change.agent.as_deref(), Some(AGENT));
    assert_eq!(entity.send(reply(AGENT)).await.unwrap().unwrap(), "Dana");
    let routed = entity.send(route(true)).await.unwrap().unwrap();
    assert_eq!(routed.recipients, [account(AGENT)]);

    // Released, the thread is the administrator's again.
    entity
        .send(Release {
            by: Who::Operator,
            customer: account(CUSTOMER),
        })
        .await
        .unwrap()
        .unwrap();
    let routed = entity.send(route(true)).await.unwrap().unwrap();
    assert_eq!(routed.recipients, [account(ADMIN)]);
}

#[actix_rt::test]
async fn with_the_administrator_away_the_policy_assigns_and_staff_cannot_be_customers() {
    let dir = tempfile::tempdir().unwrap();
    let entity = entity(dir.path(), AssignPolicy::RoundRobin);
    // Online, the administrator keeps the thread.
    let routed = entity.send(route(true)).await.unwrap().unwrap();
    assert!(routed.change.is_none());
    // Away past the delay (zero here): the policy hands it to the agent.
    let routed = entity.send(route(false)).await.unwrap().unwrap();
    assert_eq!(routed.recipients, [account(AGENT)]);
    let change = routed.change.unwrap();
    assert_eq!(change.agent.as_deref(), Some(AGENT));
    assert_eq!(change.by, Who::Policy.label());

    let staff = entity
        .send(Route {
            customer: account(AGENT),
            admin_online: true,
            auto_assign_after: Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(matches!(staff, Err(EntityError::Invalid(_))), "{staff:?}");
}
