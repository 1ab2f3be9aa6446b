//! One `impl Handler` per message of `messages.rs`, in the same order.

use actix::prelude::*;

use super::messages::*;
use super::{check_display_name, Change, Entity, EntityError, Who};
use crate::ids::AccountId;
use crate::store::EntityThreadRecord;
use crate::wire::messages::EntityEventKind;

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Handler<Route> for Entity {
    type Result = Result<Routed, EntityError>;

    fn handle(&mut self, msg: Route, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        let c = &msg.customer;
        if c.as_str() == self.record.admin || self.is_agent(c) {
            return Err(EntityError::Invalid(format!(
                "{c} serves {}: answer customers with on_behalf_of",
                self.record.handle
            )));
        }
        let now = crate::clock::now_ms();
        let existing = self.store.entity_thread_get(&self.id, c)?;
        let mut dirty = false;
        let mut t = match existing {
            Some(t) if t.open => t,
            _ => {
                // A new customer, or a closed thread that a new message reopens: it goes to
                // the administrator (or to the policy's agent, below).
                dirty = true;
                let mut t = EntityThreadRecord {
                    open: true,
                    agent: None,
                    opened_ms: now,
                    updated_ms: now,
                    history: Vec::new(),
                };
                t.step(now, "opened", c.as_str());
                t
            }
        };
        let mut change = None;
        if t.agent.is_none() && !msg.admin_online {
            let admin = AccountId::parse(&self.record.admin)
                .map_err(|e| EntityError::Invalid(e.to_string()))?;
            let since = self.store.last_seen(&admin)?.max(self.record.created_ms);
            let delay = self
                .record
                .auto_assign_after_ms
                .unwrap_or_else(|| ms(msg.auto_assign_after));
            if now.saturating_sub(since) >= delay {
                if let Some(agent) = self.pick()? {
                    self.record.next_round_robin = self.record.next_round_robin.wrapping_add(1);
                    self.store.entity_put(&self.record)?;
                    t.agent = Some(agent.clone());
                    t.step(now, "assigned", &Who::Policy.label());
                    dirty = true;
                    change = Some(Change {
                        customer: c.clone(),
                        kind: EntityEventKind::Assigned,
                        agent: Some(agent),
                        previous: None,
                        by: Who::Policy.label(),
                    });
                }
            }
        }
        if dirty {
            self.put_thread(c, &t)?;
        }
        let recipients = self
            .recipients(&t)
            .iter()
            .filter_map(|a| AccountId::parse(a).ok())
            .collect();
        Ok(Routed { recipients, change })
    }
}

impl Handler<CheckReply> for Entity {
    type Result = Result<String, EntityError>;

    fn handle(&mut self, msg: CheckReply, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        let is_admin = msg.sender.as_str() == self.record.admin;
        if !is_admin && !self.is_agent(&msg.sender) {
            return Err(EntityError::NotStaff(self.record.handle.clone()));
        }
        let t = self.store.entity_thread_get(&self.id, &msg.customer)?;
        if is_admin {
            return match t {
                Some(_) => Ok(self.record.display_name.clone()),
                None => Err(EntityError::UnknownThread(msg.customer.to_string())),
            };
        }
        match t {
            Some(t) if t.open && t.agent.as_deref() == Some(msg.sender.as_str()) => Ok(self
                .record
                .agents
                .get(msg.sender.as_str())
                .cloned()
                .unwrap_or_default()),
            _ => Err(EntityError::NotAssigned(msg.customer.to_string())),
        }
    }
}

impl Handler<Assign> for Entity {
    type Result = Result<Change, EntityError>;

    fn handle(&mut self, msg: Assign, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_admin(&msg.by)?;
        if !self.is_agent(&msg.agent) {
            return Err(EntityError::NotAgent(msg.agent.to_string()));
        }
        let mut t = self.thread(&msg.customer)?;
        let previous = t.agent.replace(msg.agent.to_string());
        t.open = true;
        t.step(crate::clock::now_ms(), "assigned", &msg.by.label());
        self.put_thread(&msg.customer, &t)?;
        Ok(Change {
            customer: msg.customer,
            kind: EntityEventKind::Assigned,
            agent: t.agent,
            previous,
            by: msg.by.label(),
        })
    }
}

impl Handler<Release> for Entity {
    type Result = Result<Change, EntityError>;

    fn handle(&mut self, msg: Release, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_admin(&msg.by)?;
        let mut t = self.thread(&msg.customer)?;
        let previous = t.agent.take();
        t.step(crate::clock::now_ms(), "released", &msg.by.label());
        self.put_thread(&msg.customer, &t)?;
        Ok(Change {
            customer: msg.customer,
            kind: EntityEventKind::Released,
            agent: None,
            previous,
            by: msg.by.label(),
        })
    }
}

impl Handler<Close> for Entity {
    type Result = Result<Change, EntityError>;

    fn handle(&mut self, msg: Close, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        let mut t = match &msg.by {
            Who::Account(a) if !self.is_admin(&msg.by) => {
                if !self.is_agent(a) {
                    return Err(EntityError::NotStaff(self.record.handle.clone()));
                }
                match self.store.entity_thread_get(&self.id, &msg.customer)? {
                    Some(t) if t.open && t.agent.as_deref() == Some(a.as_str()) => t,
                    _ => return Err(EntityError::NotAssigned(msg.customer.to_string())),
                }
            }
            _ => self.thread(&msg.customer)?,
        };
        let previous = t.agent.take();
        t.open = false;
        t.step(crate::clock::now_ms(), "closed", &msg.by.label());
        self.put_thread(&msg.customer, &t)?;
        Ok(Change {
            customer: msg.customer,
            kind: EntityEventKind::Closed,
            agent: None,
            previous,
            by: msg.by.label(),
        })
    }
}

impl Handler<AddAgent> for Entity {
    type Result = Result<crate::store::EntityRecord, EntityError>;

    fn handle(&mut self, msg: AddAgent, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_admin(&msg.by)?;
        check_display_name(&msg.display_name)?;
        if msg.agent.as_str() == self.record.admin || msg.agent == self.id {
            return Err(EntityError::Invalid(
                "the administrator (or the entity itself) cannot be an agent".into(),
            ));
        }
        if msg.agent.handle().is_some() || !self.store.account_exists(&msg.agent)? {
            return Err(EntityError::Invalid(format!(
                "agent {} is not a registered account",
                msg.agent
            )));
        }
        if !self.is_agent(&msg.agent) && self.record.agents.len() >= msg.max_agents {
            return Err(EntityError::Invalid(format!(
                "an entity has at most {} agents (entities.max_agents)",
                msg.max_agents
            )));
        }
        self.record
            .agents
            .insert(msg.agent.to_string(), msg.display_name);
        self.store.entity_put(&self.record)?;
        Ok(self.record.clone())
    }
}

impl Handler<RemoveAgent> for Entity {
    type Result = Result<(crate::store::EntityRecord, Vec<Change>), EntityError>;

    fn handle(&mut self, msg: RemoveAgent, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_admin(&msg.by)?;
        if self.record.agents.remove(msg.agent.as_str()).is_none() {
            return Err(EntityError::NotAgent(msg.agent.to_string()));
        }
        // The record first: from here on the agent can neither answer nor be assigned, even
        // if a crash stops the loop below (its threads then still name it, and the next
        // routing sends them to the administrator: see `recipients`' callers).
        self.store.entity_put(&self.record)?;
        let now = crate::clock::now_ms();
        let mut changes = Vec::new();
        for (customer, mut t) in self.store.entity_threads(&self.id)? {
            if t.agent.as_deref() != Some(msg.agent.as_str()) {
                continue;
            }
            let previous = t.agent.take();
            t.step(now, "agent-removed", &msg.by.label());
            self.put_thread(&customer, &t)?;
            changes.push(Change {
                customer,
                kind: EntityEventKind::AgentRemoved,
                agent: None,
                previous,
                by: msg.by.label(),
            });
        }
        Ok((self.record.clone(), changes))
    }
}

impl Handler<Configure> for Entity {
    type Result = Result<crate::store::EntityRecord, EntityError>;

    fn handle(&mut self, msg: Configure, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_admin(&msg.by)?;
        if let Some(name) = &msg.display_name {
            check_display_name(name)?;
        }
        let mut next = self.record.clone();
        if let Some(p) = msg.policy {
            next.policy = p;
        }
        if let Some(c) = msg.copy_admin {
            next.copy_admin = c;
        }
        if let Some(n) = msg.display_name {
            next.display_name = n;
        }
        if msg.auto_assign_after_ms.is_some() {
            next.auto_assign_after_ms = msg.auto_assign_after_ms;
        }
        self.store.entity_put(&next)?;
        self.record = next;
        Ok(self.record.clone())
    }
}

impl Handler<View> for Entity {
    type Result = Result<EntityView, EntityError>;

    fn handle(&mut self, msg: View, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        let agent = match &msg.asker {
            _ if self.is_admin(&msg.asker) => None,
            Who::Account(a) if self.is_agent(a) => Some(a.to_string()),
            _ => return Err(EntityError::NotStaff(self.record.handle.clone())),
        };
        let threads = match &msg.customer {
            Some(c) => {
                let t = self.store.entity_thread_get(&self.id, c)?;
                match (t, &agent) {
                    (Some(t), None) => vec![(c.clone(), t)],
                    (Some(t), Some(me)) if t.open && t.agent.as_ref() == Some(me) => {
                        vec![(c.clone(), t)]
                    }
                    (_, Some(_)) => return Err(EntityError::NotAssigned(c.to_string())),
                    (None, None) => return Err(EntityError::UnknownThread(c.to_string())),
                }
            }
            None => self
                .store
                .entity_threads(&self.id)?
                .into_iter()
                .filter(|(_, t)| match &agent {
                    None => true,
                    Some(me) => t.open && t.agent.as_ref() == Some(me),
                })
                .collect(),
        };
        Ok(EntityView {
            record: self.record.clone(),
            threads,
            load: self.load()?,
        })
    }
}
