//! Business entities in the client: a customer writes to an entity (one envelope per current
//! recipient device of its thread, re-fetched on every send and after a mismatch, so the
//! customer never has to act when the thread moves to an agent); an agent or the
//! administrator answers as the entity; the administrator assigns a thread with the thread's
//! recent history end to end encrypted to the agent (the handover), releases, closes and
//! manages agents.
//!
//! Staff keep an entity thread's history under [`thread_key`]; customers under the entity's
//! handle.

use std::collections::HashMap;

use anyhow::bail;

use super::connection::ClientError;
use super::{Client, Event, MISMATCH_RETRIES};
use crate::e2e::payload::{HistoryEntry, Inner, Payload};
use crate::ids::MsgId;
use crate::wire::messages::{
    client_frame, server_frame, Deliver, EntityInfo, EntityOp, EntityRequest, ErrorCode,
    GetDevices, MessageKind, Send, ServerAck,
};

/// Most history entries handed to an agent with an assignment.
pub const HANDOVER_ENTRIES: usize = 50;

/// How an entity message reached this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityVia {
    /// The entity's handle.
    pub entity: String,
    /// The customer whose thread it is.
    pub customer: String,
    /// To a customer: the agent who answered (its account) and its display name.
    pub agent: Option<String>,
    pub attribution: String,
}

/// The history key of an entity thread as staff see it.
pub fn thread_key(entity: &str, customer: &str) -> String {
    format!("{entity}/{customer}")
}

impl Client {
    /// The current recipient accounts and devices of this customer's thread with `entity`.
    pub async fn entity_recipients(
        &mut self,
        entity: &str,
    ) -> anyhow::Result<Vec<(String, Vec<u32>)>> {
        let req = GetDevices {
            account: entity.to_owned(),
        };
        match self
            .conn()
            .await?
            .request(client_frame::Body::GetDevices(req))
            .await?
        {
            server_frame::Body::Devices(d) if !d.recipients.is_empty() => Ok(d
                .recipients
                .into_iter()
                .map(|r| (r.account, r.devices))
                .collect()),
            server_frame::Body::Devices(_) => {
                bail!("{entity} is not a business entity, or nobody serves it yet")
            }
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// A customer writes `text` to `entity`.
    pub async fn send_to_entity(
        &mut self,
        entity: &str,
        text: &str,
    ) -> anyhow::Result<(MsgId, ServerAck)> {
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::Text {
                body: text.to_owned(),
            },
        );
        let plaintext = inner.encode();
        let msg_id = MsgId::random();
        for _ in 0..=MISMATCH_RETRIES {
            let targets = self.entity_recipients(entity).await?;
            let envelopes = self
                .encrypt_for(&targets, &plaintext, true, &HashMap::new())
                .await?;
            let send = Send {
                msg_id: msg_id.0.to_vec(),
                to: entity.to_owned(),
                envelopes,
                kind: MessageKind::Chat as i32,
                group: String::new(),
                on_behalf_of: String::new(),
                blobs: inner.blobs(),
            };
            match self
                .conn()
                .await?
                .request(client_frame::Body::Send(send))
                .await
            {
                Ok(server_frame::Body::ServerAck(ack)) => {
                    self.remember_sent(entity, &inner);
                    return Ok((msg_id, ack));
                }
                Ok(other) => bail!("unexpected answer {other:?}"),
                // The thread moved (assigned, released, agent removed): fetch and re-key.
                Err(ClientError::Relay(e)) if e.code() == ErrorCode::MismatchedDevices => {}
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the entity's recipients kept changing; try again")
    }

    /// An agent (or the administrator) answers `customer` as `entity`.
    pub async fn reply_as_entity(
        &mut self,
        entity: &str,
        customer: &str,
        text: &str,
    ) -> anyhow::Result<(MsgId, ServerAck)> {
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::Text {
                body: text.to_owned(),
            },
        );
        let plaintext = inner.encode();
        let msg_id = MsgId::random();
        for _ in 0..=MISMATCH_RETRIES {
            let devices = self.devices_of(customer).await?;
            let envelopes = self
                .encrypt_for(
                    &[(customer.to_owned(), devices)],
                    &plaintext,
                    false,
                    &HashMap::new(),
                )
                .await?;
            let send = Send {
                msg_id: msg_id.0.to_vec(),
                to: customer.to_owned(),
                envelopes,
                kind: MessageKind::Chat as i32,
                group: String::new(),
                on_behalf_of: entity.to_owned(),
                blobs: inner.blobs(),
            };
            match self
                .conn()
                .await?
                .request(client_frame::Body::Send(send))
                .await
            {
                Ok(server_frame::Body::ServerAck(ack)) => {
                    self.remember_sent(&thread_key(entity, customer), &inner);
                    return Ok((msg_id, ack));
                }
                Ok(other) => bail!("unexpected answer {other:?}"),
                Err(ClientError::Relay(e)) if e.code() == ErrorCode::MismatchedDevices => {
                    self.set_devices(customer, e.devices.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the customer's devices kept changing; try again")
    }

    async fn entity_request(&mut self, req: EntityRequest) -> anyhow::Result<EntityInfo> {
        match self
            .conn()
            .await?
            .request(client_frame::Body::Entity(req))
            .await?
        {
            server_frame::Body::EntityInfo(i) => Ok(i),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    fn entity_req(entity: &str, op: EntityOp) -> EntityRequest {
        EntityRequest {
            entity: entity.to_owned(),
            op: op as i32,
            ..EntityRequest::default()
        }
    }

    /// The entity, its agents with their load, and the threads this account may see (only
    /// `customer`'s if given).
    pub async fn entity_info(
        &mut self,
        entity: &str,
        customer: Option<&str>,
    ) -> anyhow::Result<EntityInfo> {
        let mut req = Self::entity_req(entity, EntityOp::Info);
        req.customer = customer.unwrap_or_default().to_owned();
        self.entity_request(req).await
    }

    /// The administrator assigns `customer`'s thread to `agent`, handing over the thread's
    /// recent history end to end encrypted to every device of the agent.
    pub async fn assign_thread(
        &mut self,
        entity: &str,
        customer: &str,
        agent: &str,
    ) -> anyhow::Result<EntityInfo> {
        let key = thread_key(entity, customer);
        let mut entries: Vec<HistoryEntry> = self
            .state
            .history
            .iter()
            .filter(|e| e.thread == key)
            .cloned()
            .collect();
        let skip = entries.len().saturating_sub(HANDOVER_ENTRIES);
        entries.drain(..skip);
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::History {
                part: 0,
                parts: 1,
                entries,
            },
        );
        let plaintext = inner.encode();
        for _ in 0..=MISMATCH_RETRIES {
            let devices = self.devices_of(agent).await?;
            let payload = self
                .encrypt_for(
                    &[(agent.to_owned(), devices)],
                    &plaintext,
                    false,
                    &HashMap::new(),
                )
                .await?;
            let mut req = Self::entity_req(entity, EntityOp::Assign);
            req.customer = customer.to_owned();
            req.agent = agent.to_owned();
            req.payload = payload;
            match self
                .conn()
                .await?
                .request(client_frame::Body::Entity(req))
                .await
            {
                Ok(server_frame::Body::EntityInfo(i)) => return Ok(i),
                Ok(other) => bail!("unexpected answer {other:?}"),
                Err(ClientError::Relay(e)) if e.code() == ErrorCode::MismatchedDevices => {
                    self.set_devices(agent, e.devices.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the agent's devices kept changing; try again")
    }

    /// The administrator routes `customer`'s thread back to itself.
    pub async fn release_thread(
        &mut self,
        entity: &str,
        customer: &str,
    ) -> anyhow::Result<EntityInfo> {
        self.thread_op(entity, EntityOp::Release, customer).await
    }

    /// The administrator or the assigned agent closes `customer`'s thread.
    pub async fn close_thread(
        &mut self,
        entity: &str,
        customer: &str,
    ) -> anyhow::Result<EntityInfo> {
        self.thread_op(entity, EntityOp::Close, customer).await
    }

    /// An operation on one customer's thread that needs no keys moved.
    async fn thread_op(
        &mut self,
        entity: &str,
        op: EntityOp,
        customer: &str,
    ) -> anyhow::Result<EntityInfo> {
        let mut req = Self::entity_req(entity, op);
        req.customer = customer.to_owned();
        self.entity_request(req).await
    }

    /// The administrator adds (or renames) an agent.
    pub async fn add_agent(
        &mut self,
        entity: &str,
        agent: &str,
        display_name: &str,
    ) -> anyhow::Result<EntityInfo> {
        let mut req = Self::entity_req(entity, EntityOp::AddAgent);
        req.agent = agent.to_owned();
        req.display_name = display_name.to_owned();
        self.entity_request(req).await
    }

    /// The administrator removes an agent; its threads come back at once.
    pub async fn remove_agent(&mut self, entity: &str, agent: &str) -> anyhow::Result<EntityInfo> {
        let mut req = Self::entity_req(entity, EntityOp::RemoveAgent);
        req.agent = agent.to_owned();
        self.entity_request(req).await
    }

    /// What a decrypted entity message means: a handover from the administrator, or a
    /// message of a customer thread.
    pub(super) fn received_entity(
        &mut self,
        d: &Deliver,
        msg_id: MsgId,
        inner: Inner,
    ) -> Option<Event> {
        let as_customer = !d.agent.is_empty();
        let via = EntityVia {
            entity: d.entity.clone(),
            customer: d.customer.clone(),
            agent: as_customer.then(|| d.agent.clone()),
            attribution: d.attribution.clone(),
        };
        match &inner.payload {
            // Only the relay-checked handover of an assignment (a control message from the
            // entity's administrator) may bring another account's history.
            Payload::History { entries, .. }
                if d.kind == MessageKind::Control as i32 && !as_customer =>
            {
                let key = thread_key(&d.entity, &d.customer);
                for e in entries {
                    let e = HistoryEntry {
                        thread: key.clone(),
                        ..e.clone()
                    };
                    if !self.state.history.contains(&e) {
                        self.state.remember(e);
                    }
                }
                return Some(Event::Handover {
                    entity: d.entity.clone(),
                    customer: d.customer.clone(),
                    from: d.from.clone(),
                    entries: entries.len(),
                });
            }
            Payload::Text { body } => {
                let thread = if as_customer {
                    d.entity.clone()
                } else {
                    thread_key(&d.entity, &d.customer)
                };
                self.state.remember(HistoryEntry {
                    thread,
                    from: d.from.clone(),
                    at_ms: inner.sent_at_ms,
                    body: body.clone(),
                });
            }
            _ => {}
        }
        Some(Event::Message {
            from: d.from.clone(),
            from_device: d.from_device,
            msg_id,
            timestamp_ms: d.timestamp_ms,
            inner,
            group: None,
            muted: d.muted,
            entity: Some(via),
        })
    }
}
