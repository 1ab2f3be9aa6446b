//! Group chats on the client: create and change groups, and send to every member device
//! (sender-driven fan-out: one envelope per member device, the relay cannot read any).

use std::collections::HashMap;

use anyhow::bail;

use super::connection::ClientError;
use super::state::GroupView;
use super::{Client, MISMATCH_RETRIES};
use crate::e2e::payload::{Inner, Payload};
use crate::ids::MsgId;
use crate::wire::messages::{
    client_frame, server_frame, ChatState, CreateGroup, ErrorCode, GetGroup, GroupInfo, GroupOp,
    MessageKind, Send, SendChatState, ServerAck, UpdateGroup,
};

impl Client {
    /// Creates a group with this account as admin.
    pub async fn create_group(
        &mut self,
        subject: &str,
        members: &[String],
    ) -> anyhow::Result<GroupInfo> {
        let req = CreateGroup {
            subject: subject.to_owned(),
            members: members.to_vec(),
        };
        let info = self
            .group_answer(client_frame::Body::CreateGroup(req))
            .await?;
        Ok(info)
    }

    /// Adds, removes, promotes, leaves or renames.
    pub async fn update_group(
        &mut self,
        group: &str,
        op: GroupOp,
        accounts: &[String],
        subject: &str,
    ) -> anyhow::Result<GroupInfo> {
        let req = UpdateGroup {
            group: group.to_owned(),
            op: op as i32,
            accounts: accounts.to_vec(),
            subject: subject.to_owned(),
        };
        let info = self
            .group_answer(client_frame::Body::UpdateGroup(req))
            .await?;
        if op == GroupOp::Leave {
            self.state.groups.remove(group);
            self.state.save()?;
        }
        Ok(info)
    }

    /// The group as the relay has it now.
    pub async fn group_info(&mut self, group: &str) -> anyhow::Result<GroupInfo> {
        self.group_answer(client_frame::Body::GetGroup(GetGroup {
            group: group.to_owned(),
        }))
        .await
    }

    async fn group_answer(&mut self, body: client_frame::Body) -> anyhow::Result<GroupInfo> {
        match self.conn().await?.request(body).await? {
            server_frame::Body::GroupInfo(info) => {
                self.absorb_group(&info);
                Ok(info)
            }
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Remembers a group's members and their devices.
    fn absorb_group(&mut self, info: &GroupInfo) {
        let view = GroupView {
            subject: info.subject.clone(),
            members: info
                .members
                .iter()
                .map(|m| (m.account.clone(), m.admin))
                .collect(),
            version: info.version,
        };
        for m in &info.members {
            self.set_devices(&m.account, m.devices.clone());
        }
        self.state.groups.insert(info.group.clone(), view);
        let _ = self.state.save();
    }

    /// Sends a text to a group.
    pub async fn send_group_text(
        &mut self,
        group: &str,
        text: &str,
    ) -> anyhow::Result<(MsgId, ServerAck)> {
        let inner = Inner::new(
            crate::clock::now_ms(),
            Payload::Text {
                body: text.to_owned(),
            },
        );
        let msg_id = MsgId::random();
        let ack = self.send_group_inner(group, msg_id, &inner).await?;
        self.remember_sent(group, &inner);
        Ok((msg_id, ack))
    }

    /// Encrypts `inner` for every device of every member (but this one) and sends it. A
    /// mismatched-devices answer (someone joined, left or linked a device) refreshes the group
    /// and retries with the same msg_id.
    pub async fn send_group_inner(
        &mut self,
        group: &str,
        msg_id: MsgId,
        inner: &Inner,
    ) -> anyhow::Result<ServerAck> {
        let plaintext = inner.encode();
        let me = self.state.account()?.to_owned();
        for _ in 0..=MISMATCH_RETRIES {
            if !self.state.groups.contains_key(group) {
                self.group_info(group).await?;
            }
            let members: Vec<String> = self
                .state
                .groups
                .get(group)
                .map(|g| g.members.keys().cloned().collect())
                .unwrap_or_default();
            let mut targets = Vec::new();
            for m in members {
                let mut devices = self.devices_of(&m).await?;
                if m == me {
                    let mine = self.state.device;
                    devices.retain(|&d| d != mine);
                }
                if !devices.is_empty() {
                    targets.push((m, devices));
                }
            }
            let envelopes = self
                .encrypt_for(&targets, &plaintext, true, &HashMap::new())
                .await?;
            if envelopes.is_empty() {
                bail!("nobody else is in this group");
            }
            let send = Send {
                msg_id: msg_id.0.to_vec(),
                to: String::new(),
                envelopes,
                kind: MessageKind::Chat as i32,
                group: group.to_owned(),
                on_behalf_of: String::new(),
                blobs: inner.blobs(),
            };
            match self
                .conn()
                .await?
                .request(client_frame::Body::Send(send))
                .await
            {
                Ok(server_frame::Body::ServerAck(ack)) => return Ok(ack),
                Ok(other) => bail!("unexpected answer {other:?}"),
                Err(ClientError::Relay(e)) if e.code() == ErrorCode::MismatchedDevices => {
                    for m in &e.members {
                        self.set_devices(&m.account, m.devices.clone());
                    }
                    self.state.groups.remove(group);
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the group kept changing; try again")
    }

    /// Shows a group that this user is typing or recording.
    pub async fn group_chat_state(&mut self, group: &str, state: ChatState) -> anyhow::Result<()> {
        let s = SendChatState {
            to: String::new(),
            state: state as i32,
            group: group.to_owned(),
        };
        self.conn()
            .await?
            .send_only(client_frame::Body::ChatState(s))
            .await?;
        Ok(())
    }
}
