//! Account settings on the client: contacts, presence privacy, mutes, blocks, push endpoint.

use anyhow::bail;

use super::Client;
use crate::wire::messages::{
    client_frame, server_frame, ContactsResult, Devices, GetDevices, Mute, Muted, PresencePrivacy,
    RegisterPush, SetPrivacy,
};

/// How long a mute lasts.
#[derive(Debug, Clone, Copy)]
pub enum MuteFor {
    /// Until this time (ms since the epoch).
    Until(u64),
    Forever,
    /// The relay decides: groups in proportion to their size, 1:1 forever.
    Default,
}

impl Client {
    /// Replaces the contact list; answers which numbers are registered.
    pub async fn upload_contacts(&mut self, numbers: &[String]) -> anyhow::Result<ContactsResult> {
        let body = client_frame::Body::UploadContacts(crate::wire::messages::UploadContacts {
            numbers: numbers.to_vec(),
        });
        match self.conn().await?.request(body).await? {
            server_frame::Body::Contacts(c) => Ok(c),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Who may see this account's presence.
    pub async fn set_privacy(&mut self, presence: PresencePrivacy) -> anyhow::Result<()> {
        let body = client_frame::Body::SetPrivacy(SetPrivacy {
            presence: presence as i32,
        });
        self.conn().await?.request(body).await?;
        Ok(())
    }

    /// Mutes a thread (an account or a group id).
    pub async fn mute(&mut self, thread: &str, how: MuteFor) -> anyhow::Result<Muted> {
        let (until_ms, forever) = match how {
            MuteFor::Until(t) => (t, false),
            MuteFor::Forever => (0, true),
            MuteFor::Default => (0, false),
        };
        self.mute_request(Mute {
            thread: thread.to_owned(),
            until_ms,
            forever,
            unmute: false,
        })
        .await
    }

    pub async fn unmute(&mut self, thread: &str) -> anyhow::Result<Muted> {
        self.mute_request(Mute {
            thread: thread.to_owned(),
            until_ms: 0,
            forever: false,
            unmute: true,
        })
        .await
    }

    async fn mute_request(&mut self, m: Mute) -> anyhow::Result<Muted> {
        match self
            .conn()
            .await?
            .request(client_frame::Body::Mute(m))
            .await?
        {
            server_frame::Body::Muted(m) => Ok(m),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Where the relay should POST when something waits while this device is offline
    /// (`None` removes it).
    pub async fn register_push(&mut self, endpoint: Option<&str>) -> anyhow::Result<()> {
        let body = client_frame::Body::RegisterPush(RegisterPush {
            endpoint: endpoint.unwrap_or_default().to_owned(),
        });
        self.conn().await?.request(body).await?;
        Ok(())
    }

    /// An account's current devices, from the relay.
    pub async fn devices(&mut self, account: &str) -> anyhow::Result<Devices> {
        let body = client_frame::Body::GetDevices(GetDevices {
            account: account.to_owned(),
        });
        match self.conn().await?.request(body).await? {
            server_frame::Body::Devices(d) => Ok(d),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Blocks (`on`) or unblocks an account; answers the new block list.
    pub async fn block(&mut self, account: &str, on: bool) -> anyhow::Result<Vec<String>> {
        let body = client_frame::Body::Block(crate::wire::messages::Block {
            account: account.to_owned(),
            unblock: !on,
        });
        match self.conn().await?.request(body).await? {
            server_frame::Body::Blocked(b) => Ok(b.accounts),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// The accounts this account has blocked.
    pub async fn blocked(&mut self) -> anyhow::Result<Vec<String>> {
        let body = client_frame::Body::GetBlocked(crate::wire::messages::GetBlocked {});
        match self.conn().await?.request(body).await? {
            server_frame::Body::Blocked(b) => Ok(b.accounts),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}
