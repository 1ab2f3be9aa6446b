//! Linked devices on the client: a companion shows a pairing code and waits; the primary
//! links it and hands it recent history, end-to-end encrypted: in an encrypted blob whose
//! pointer and key travel in one end-to-end message when the relay's HTTP address is known,
//! else inline in end-to-end messages of [`HISTORY_PART_ENTRIES`] entries.
//!
//! # Pairing code format
//!
//! `rbx1:` then URL-safe base64 (no padding) of the companion's Noise static public key
//! (32 bytes) followed by a one-time secret (16 bytes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;

use super::connection::{ClientError, Connection, Identity};
use super::{Client, Event};
use crate::e2e::payload::{HistoryEntry, Inner, Payload};
use crate::ids::MsgId;
use crate::wire::messages::{
    client_frame, server_frame, ErrorCode, LinkDevice, MessageKind, UnlinkDevice,
};

/// Prefix of a pairing code.
pub const PAIRING_PREFIX: &str = "rbx1:";
/// History entries per transfer part (each part is one end-to-end message).
pub const HISTORY_PART_ENTRIES: usize = 25;
/// How long the primary waits for a new companion to publish its keys.
pub const COMPANION_KEYS_WAIT: Duration = Duration::from_secs(60);

/// Most entries accepted from a history blob.
pub const MAX_HISTORY_BLOB_ENTRIES: usize = 10_000;

/// A history blob announced by this account's primary, waiting to be downloaded.
#[derive(Debug, Clone)]
pub struct HistoryPointer {
    pub from: String,
    pub from_device: u32,
    pub msg_id: MsgId,
    pub blob: String,
    pub size: u64,
    pub key: String,
    pub entries: u32,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Splits a pairing code into the companion's key and secret.
pub fn parse_pairing_code(code: &str) -> anyhow::Result<([u8; 32], Vec<u8>)> {
    let body = code
        .trim()
        .strip_prefix(PAIRING_PREFIX)
        .context("a pairing code starts with rbx1:")?;
    let raw = B64
        .decode(body)
        .context("the pairing code is damaged (not base64)")?;
    if raw.len() != 48 {
        bail!(
            "the pairing code is damaged ({} bytes instead of 48)",
            raw.len()
        );
    }
    let key = <[u8; 32]>::try_from(&raw[..32]).context("key")?;
    Ok((key, raw[32..].to_vec()))
}

impl Client {
    /// On a new companion: the pairing code to show to the primary.
    pub fn pairing_code(&mut self) -> anyhow::Result<String> {
        if self.state.account.is_some() {
            bail!(
                "this client is already registered as {}; use a new --home for a companion",
                self.state.account()?
            );
        }
        let secret = match &self.state.pending_link_secret {
            Some(s) => s.clone(),
            None => {
                let s = rand::random::<[u8; 16]>().to_vec();
                self.state.pending_link_secret = Some(s.clone());
                self.state.save()?;
                s
            }
        };
        let mut raw = self.state.noise.public.to_vec();
        raw.extend_from_slice(&secret);
        Ok(format!("{PAIRING_PREFIX}{}", B64.encode(raw)))
    }

    /// On a new companion: waits until the primary linked it, then logs in and publishes keys.
    pub async fn await_link(&mut self, timeout: Duration) -> anyhow::Result<(String, u32)> {
        let secret = self
            .state
            .pending_link_secret
            .clone()
            .context("no pairing code issued; run `pair` first")?;
        let deadline = Instant::now() + timeout;
        loop {
            let who = Identity::Companion {
                secret: secret.clone(),
            };
            match Connection::connect_to(
                &self.state.target(),
                &self.state.noise,
                self.state.relay_key,
                &who,
            )
            .await
            {
                Ok((conn, est)) => {
                    self.state.account = Some(est.account.clone());
                    self.state.device = est.device;
                    self.state.token = Some(est.token);
                    self.state.relay_key = Some(est.relay_key);
                    self.state.pending_link_secret = None;
                    self.state.save()?;
                    self.conn = Some(conn);
                    self.upload_keys().await?;
                    return Ok((est.account, est.device));
                }
                Err(e)
                    if e.relay_code() == Some(ErrorCode::UnknownDevice)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("waiting to be linked"),
            }
        }
    }

    /// On the primary: links the companion that shows `code`, then sends it recent history.
    /// Returns the new device number and how many history entries were sent.
    pub async fn link(&mut self, code: &str) -> anyhow::Result<(u32, usize)> {
        let (noise_static, secret) = parse_pairing_code(code)?;
        let req = LinkDevice {
            noise_static: noise_static.to_vec(),
            secret,
        };
        let device = match self
            .conn()
            .await?
            .request(client_frame::Body::LinkDevice(req))
            .await?
        {
            server_frame::Body::Linked(l) => l.device,
            other => bail!("unexpected answer {other:?}"),
        };
        let me = self.state.account()?.to_owned();
        let mut devices = self
            .state
            .peers
            .get(&me)
            .cloned()
            .unwrap_or_else(|| vec![self.state.device]);
        if !devices.contains(&device) {
            devices.push(device);
        }
        self.set_devices(&me, devices);
        let sent = self.transfer_history(device).await?;
        Ok((device, sent))
    }

    /// Sends this device's recent history to its own new `device`, end-to-end encrypted.
    pub async fn transfer_history(&mut self, device: u32) -> anyhow::Result<usize> {
        let me = self.state.account()?.to_owned();
        let deadline = Instant::now() + COMPANION_KEYS_WAIT;
        let bundle = loop {
            let claimed = self.claim(&me, &[device]).await?;
            if let Some(dk) = claimed.into_iter().find(|d| d.device == device) {
                break dk;
            }
            if Instant::now() >= deadline {
                bail!("device {device} did not publish its keys within {COMPANION_KEYS_WAIT:?}; history not sent");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let entries: Vec<_> = self.state.history.iter().cloned().collect();
        let mut bundles = HashMap::from([((me.clone(), device), bundle)]);
        if self.state.http.is_some() {
            match self.history_by_blob(&me, &entries, &bundles).await {
                Ok(()) => return Ok(entries.len()),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "History blob failed; sending history inline.");
                    // A session may have been started by the failed attempt.
                    if self.state.e2e.has_session(&me, device) {
                        bundles.clear();
                    }
                }
            }
        }
        let parts = entries.chunks(HISTORY_PART_ENTRIES).count().max(1);
        let chunks: Vec<Vec<_>> = if entries.is_empty() {
            vec![Vec::new()]
        } else {
            entries
                .chunks(HISTORY_PART_ENTRIES)
                .map(<[_]>::to_vec)
                .collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let payload = Payload::History {
                part: u32::try_from(i).unwrap_or(u32::MAX),
                parts: u32::try_from(parts).unwrap_or(u32::MAX),
                entries: chunk,
            };
            let inner = Inner::new(crate::clock::now_ms(), payload);
            self.send_to_account(&me, MsgId::random(), &inner, MessageKind::Control, &bundles)
                .await?;
            // The session exists after the first part.
            bundles.clear();
        }
        Ok(entries.len())
    }

    /// Puts `entries` into an encrypted blob and sends its pointer and key to our devices.
    async fn history_by_blob(
        &mut self,
        me: &str,
        entries: &[HistoryEntry],
        bundles: &HashMap<(String, u32), crate::wire::messages::DeviceKeys>,
    ) -> anyhow::Result<()> {
        let plain = serde_json::to_vec(entries)?;
        let (key, sealed) = super::media::seal(&plain)?;
        let size = sealed.len() as u64;
        let blob = self.upload_blob(&[sealed]).await?;
        let payload = Payload::HistoryBlob {
            blob,
            size,
            key: hex::encode(key),
            entries: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        };
        let inner = Inner::new(crate::clock::now_ms(), payload);
        self.send_to_account(me, MsgId::random(), &inner, MessageKind::Control, bundles)
            .await?;
        Ok(())
    }

    /// On a new companion: downloads, decrypts and merges a history blob.
    pub(super) async fn receive_history_blob(&mut self, p: HistoryPointer) -> Event {
        match self.fetch_history_blob(&p).await {
            Ok(n) => Event::History {
                from: p.from,
                entries: n,
            },
            Err(e) => Event::Undecryptable {
                from: p.from,
                from_device: p.from_device,
                msg_id: p.msg_id,
                error: format!("history blob: {e:#}"),
            },
        }
    }

    async fn fetch_history_blob(&mut self, p: &HistoryPointer) -> anyhow::Result<usize> {
        let sealed = self.download_blob(&p.blob, None).await?;
        if sealed.len() as u64 != p.size {
            bail!("{} bytes instead of {}", sealed.len(), p.size);
        }
        let plain = super::media::open(&p.key, &sealed)?;
        let entries: Vec<HistoryEntry> =
            serde_json::from_slice(&plain).context("history is malformed")?;
        if entries.len() > MAX_HISTORY_BLOB_ENTRIES {
            bail!("history of {} entries is too long", entries.len());
        }
        for e in &entries {
            if !self.state.history.contains(e) {
                self.state.remember(e.clone());
            }
        }
        self.state.save()?;
        Ok(entries.len())
    }

    /// On the primary: removes a companion.
    pub async fn unlink(&mut self, device: u32) -> anyhow::Result<()> {
        match self
            .conn()
            .await?
            .request(client_frame::Body::UnlinkDevice(UnlinkDevice { device }))
            .await
        {
            Ok(_) => {
                let me = self.state.account()?.to_owned();
                let devices = self
                    .state
                    .peers
                    .get(&me)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|&d| d != device)
                    .collect();
                self.set_devices(&me, devices);
                self.state.save()?;
                Ok(())
            }
            Err(ClientError::Relay(e)) => Err(ClientError::Relay(e).into()),
            Err(e) => Err(e.into()),
        }
    }
}
