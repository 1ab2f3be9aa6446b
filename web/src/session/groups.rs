//! Group sends: the members and their devices from the relay (`GetGroup`), one key claim per
//! member account that lacks sessions, then one envelope per device of every member but this
//! one (sender-driven fan-out; the relay cannot read any of them). A device without usable
//! keys is left out rather than stopping the message to everyone else, as the CLI does.

use relaybox_core::wire::messages::{
    client_frame, ClaimKeys, ClaimedKeys, GetGroup, GroupInfo, MessageKind, Send,
};

use super::{Companion, Event, Pending};

impl Companion {
    /// Asks the relay for a group's members (for the send `msg_id`, or to show the group).
    pub(super) fn ask_group(&mut self, group: &str, msg_id: Option<[u8; 16]>) {
        self.send_frame(
            client_frame::Body::GetGroup(GetGroup {
                group: group.to_owned(),
            }),
            Some(Pending::Group { msg_id }),
        );
    }

    /// The relay's answer to [`Companion::ask_group`].
    pub(super) fn group_info(&mut self, g: GroupInfo, msg_id: Option<[u8; 16]>) {
        let members: Vec<String> = g.members.iter().map(|m| m.account.clone()).collect();
        for m in g.members {
            self.set_devices(&m.account, m.devices);
        }
        self.groups.insert(g.group.clone(), members.clone());
        self.events.push(Event::GroupInfo {
            group: g.group,
            subject: g.subject,
            members,
        });
        if let Some(msg_id) = msg_id {
            self.group_claim(msg_id);
        }
    }

    /// Claims keys for the members' devices that have no session yet, one account at a time.
    pub(super) fn group_claim(&mut self, msg_id: [u8; 16]) {
        let Some(group) = self.op(msg_id).map(|o| o.to.clone()) else {
            return;
        };
        // An empty list is a group seen in a delivery whose members are still being asked.
        let Some(members) = self.groups.get(&group).filter(|m| !m.is_empty()).cloned() else {
            return self.ask_group(&group, Some(msg_id));
        };
        let rest: Vec<(String, Vec<u32>)> = members
            .into_iter()
            .map(|m| {
                let missing = self
                    .targets(&m)
                    .into_iter()
                    .filter(|&d| !self.e2e.has_session(&m, d))
                    .collect::<Vec<_>>();
                (m, missing)
            })
            .filter(|(_, missing)| !missing.is_empty())
            .collect();
        self.claimed.entry(msg_id).or_default();
        self.claim_next(msg_id, rest);
    }

    fn claim_next(&mut self, msg_id: [u8; 16], mut rest: Vec<(String, Vec<u32>)>) {
        match rest.pop() {
            None => self.group_send(msg_id),
            Some((account, devices)) => self.send_frame(
                client_frame::Body::ClaimKeys(ClaimKeys { account, devices }),
                Some(Pending::GroupClaim { msg_id, rest }),
            ),
        }
    }

    /// One member account's claimed keys arrived.
    pub(super) fn group_claimed(
        &mut self,
        msg_id: [u8; 16],
        c: ClaimedKeys,
        rest: Vec<(String, Vec<u32>)>,
    ) {
        let bundles = self.claimed.entry(msg_id).or_default();
        for d in c.devices {
            bundles.insert((c.account.clone(), d.device), d);
        }
        self.claim_next(msg_id, rest);
    }

    fn group_send(&mut self, msg_id: [u8; 16]) {
        let Some(op) = self.op(msg_id).cloned() else {
            return;
        };
        let bundles = self.claimed.remove(&msg_id).unwrap_or_default();
        let members = self.groups.get(&op.to).cloned().unwrap_or_default();
        let mut envelopes = Vec::new();
        for m in members {
            for d in self.targets(&m) {
                let has = self.e2e.has_session(&m, d);
                let bundle = bundles.get(&(m.clone(), d));
                if !has && bundle.is_none() {
                    continue; // No published keys: left out.
                }
                if let Ok(mut env) = self.e2e.encrypt(&m, d, bundle.filter(|_| !has), &op.inner) {
                    env.account = m.clone();
                    envelopes.push(env);
                }
            }
        }
        if envelopes.is_empty() {
            return self.fail(msg_id, "nobody else in this group can receive it yet");
        }
        let send = Send {
            msg_id: msg_id.to_vec(),
            group: op.to,
            envelopes,
            kind: MessageKind::Chat as i32,
            ..Default::default()
        };
        self.send_frame(
            client_frame::Body::Send(send),
            Some(Pending::Send { msg_id }),
        );
    }
}

/// Whether `to` names a group (`g` and up to 64 letters and digits).
pub(super) fn is_group_id(to: &str) -> bool {
    to.strip_prefix(super::GROUP_ID_PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}
