//! One `impl Handler` per message of `messages.rs`, in the same order.

use std::collections::BTreeSet;

use actix::prelude::*;

use super::messages::*;
use super::{GroupError, Thread, MAX_SUBJECT_BYTES};
use crate::ids::{AccountId, DeviceId};
use crate::store::GroupRecord;
use crate::wire::messages::GroupOp;

impl Handler<Update> for Thread {
    type Result = Result<(GroupRecord, Vec<AccountId>), GroupError>;

    fn handle(&mut self, msg: Update, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        let is_admin = msg.by_operator || self.require_member(&msg.actor)?;
        let mut next = self.record.clone();
        match msg.op {
            GroupOp::Leave => {
                next.members.remove(msg.actor.as_str());
                // A group never lacks an admin while it has members.
                if !next.members.is_empty() && !next.members.values().any(|&a| a) {
                    if let Some(first) = next.members.values_mut().next() {
                        *first = true;
                    }
                }
            }
            op => {
                if !is_admin {
                    return Err(GroupError::NotAdmin);
                }
                match op {
                    GroupOp::Add => {
                        for a in &msg.accounts {
                            if !self.store.account_exists(a)? {
                                return Err(GroupError::UnknownAccount(a.to_string()));
                            }
                            next.members.entry(a.to_string()).or_insert(false);
                        }
                        if next.members.len() > msg.max_members {
                            return Err(GroupError::Invalid(format!(
                                "a group has at most {} members",
                                msg.max_members
                            )));
                        }
                    }
                    GroupOp::Remove => {
                        for a in &msg.accounts {
                            next.members.remove(a.as_str());
                        }
                    }
                    GroupOp::Promote => {
                        for a in &msg.accounts {
                            match next.members.get_mut(a.as_str()) {
                                Some(admin) => *admin = true,
                                None => {
                                    return Err(GroupError::Invalid(format!("{a} is not a member")))
                                }
                            }
                        }
                    }
                    GroupOp::SetSubject => {
                        if msg.subject.len() > MAX_SUBJECT_BYTES {
                            return Err(GroupError::Invalid(format!(
                                "subject is longer than {MAX_SUBJECT_BYTES} bytes"
                            )));
                        }
                        if let Some(why) = crate::names::refusal("a group subject", &msg.subject) {
                            return Err(GroupError::Invalid(why));
                        }
                        next.subject = msg.subject.clone();
                    }
                    _ => return Err(GroupError::Invalid("unknown group operation".into())),
                }
            }
        }
        next.version += 1;
        self.store.group_put(&self.id, &next, Some(&self.record))?;
        let mut tell: BTreeSet<String> = self.record.members.keys().cloned().collect();
        tell.extend(next.members.keys().cloned());
        self.record = next.clone();
        Ok((
            next,
            tell.iter()
                .filter_map(|a| AccountId::parse(a).ok())
                .collect(),
        ))
    }
}

impl Handler<Info> for Thread {
    type Result = Result<GroupRecord, GroupError>;

    fn handle(&mut self, msg: Info, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_member(&msg.asker)?;
        Ok(self.record.clone())
    }
}

impl Handler<CheckSend> for Thread {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, msg: CheckSend, _: &mut Self::Context) -> Self::Result {
        self.last_active = std::time::Instant::now();
        self.require_member(&msg.sender.account)?;
        // Every member device with usable published keys must be addressed; one without
        // (none published yet, or a signing key from before the upload check) may be left
        // out, so it cannot stop the sender's fan-out to everyone else. It could not decrypt
        // an envelope anyway.
        let mut expected = BTreeSet::new();
        let mut optional = BTreeSet::new();
        let mut lists = Vec::new();
        for m in self.record.members.keys() {
            let Ok(account) = AccountId::parse(m) else {
                continue;
            };
            let devices: Vec<u32> = self
                .store
                .devices(&account)?
                .into_iter()
                .map(|(no, _)| no)
                .collect();
            for &d in &devices {
                if account == msg.sender.account && d == msg.sender.device {
                    continue;
                }
                let usable = self
                    .store
                    .keys_identity(&DeviceId::new(account.clone(), d))?
                    .is_some_and(|k| crate::e2e::is_ed25519_public_key(&k.signing));
                if usable {
                    expected.insert((m.clone(), d));
                } else {
                    optional.insert((m.clone(), d));
                }
            }
            lists.push((m.clone(), devices));
        }
        let covered = msg
            .addressed
            .iter()
            .all(|a| expected.contains(a) || optional.contains(a));
        if !covered || !expected.is_subset(&msg.addressed) {
            return Err(GroupError::Mismatch(lists));
        }
        Ok(())
    }
}

impl Handler<Members> for Thread {
    type Result = Result<Vec<AccountId>, GroupError>;

    fn handle(&mut self, msg: Members, _: &mut Self::Context) -> Self::Result {
        self.require_member(&msg.asker)?;
        Ok(self
            .record
            .members
            .keys()
            .filter_map(|a| AccountId::parse(a).ok())
            .collect())
    }
}
