//! A client's state on disk: its Noise key, the pinned relay key and token, its account, its
//! end-to-end account and sessions, the peers' device lists, and its trust in their keys. One JSON file, mode 0600,
//! written atomically, in the user's data directory or `--home` / `RELAYBOX_CLIENT_HOME`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::transport::{Target, TransportKind};
use super::trust::Trust;
use crate::e2e::payload::HistoryEntry;
use crate::e2e::{E2e, E2ePickle};
use crate::wire::handshake::StaticKeypair;

/// File name of the state inside the home directory.
pub const STATE_FILE: &str = "state.json";
/// How many recently received msg_ids are remembered, so a redelivery is shown once.
pub const SEEN_MSG_IDS: usize = 4096;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    relay: String,
    noise_private: String,
    relay_key: Option<String>,
    token: Option<String>,
    account: Option<String>,
    device: u32,
    e2e: E2ePickle,
    #[serde(default)]
    peers: BTreeMap<String, Vec<u32>>,
    #[serde(default)]
    seen: VecDeque<String>,
    #[serde(default)]
    groups: BTreeMap<String, GroupView>,
    #[serde(default)]
    history: VecDeque<HistoryEntry>,
    #[serde(default)]
    pending_link_secret: Option<String>,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    trust: Trust,
}

/// What this client knows of a group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupView {
    pub subject: String,
    /// Member account → admin.
    pub members: BTreeMap<String, bool>,
    pub version: u64,
}

/// Messages kept locally (for the user and for history transfer to a linked device).
pub const HISTORY_KEPT: usize = 200;

/// The loaded state.
pub struct State {
    pub home: PathBuf,
    /// Relay address, `host:port`.
    pub relay: String,
    pub noise: StaticKeypair,
    pub relay_key: Option<[u8; 32]>,
    pub token: Option<Vec<u8>>,
    pub account: Option<String>,
    pub device: u32,
    pub e2e: E2e,
    /// Last known device list of each peer account.
    pub peers: BTreeMap<String, Vec<u32>>,
    /// Recently received msg_ids (hex), oldest first.
    pub seen: VecDeque<String>,
    /// Groups this account is in.
    pub groups: BTreeMap<String, GroupView>,
    /// Recent messages, oldest first.
    pub history: VecDeque<HistoryEntry>,
    /// The secret of this companion's pairing code, until the primary links it.
    pub pending_link_secret: Option<Vec<u8>>,
    /// Base URL of the relay's HTTP listener (WebSocket and chunked HTTP transports, blobs).
    pub http: Option<String>,
    /// Which transport to connect with.
    pub transport: TransportKind,
    /// Extra CA certificate (PEM) trusted for an `https://` relay.
    pub ca: Option<PathBuf>,
    /// Key re-checks, changed keys not yet accepted, and the messages held meanwhile.
    pub trust: Trust,
}

impl State {
    /// Loads the state in `home`, or creates a fresh one (new Noise key, new e2e account).
    pub fn load_or_new(home: &Path, relay: &str) -> anyhow::Result<Self> {
        let path = home.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Self::parse(home, &bytes).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                home: home.to_owned(),
                relay: relay.to_owned(),
                noise: StaticKeypair::generate(),
                relay_key: None,
                token: None,
                account: None,
                device: 0,
                e2e: E2e::new(),
                peers: BTreeMap::new(),
                seen: VecDeque::new(),
                groups: BTreeMap::new(),
                history: VecDeque::new(),
                pending_link_secret: None,
                http: None,
                transport: TransportKind::default(),
                ca: None,
                trust: Trust::default(),
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn parse(home: &Path, bytes: &[u8]) -> anyhow::Result<Self> {
        let d: OnDisk = serde_json::from_slice(bytes).context("state file is not valid")?;
        let noise = StaticKeypair::from_private(hex32(&d.noise_private).context("noise_private")?);
        let relay_key = d
            .relay_key
            .as_deref()
            .map(hex32)
            .transpose()
            .context("relay_key")?;
        let token = d
            .token
            .as_deref()
            .map(hex::decode)
            .transpose()
            .context("token")?;
        Ok(Self {
            home: home.to_owned(),
            relay: d.relay,
            noise,
            relay_key,
            token,
            account: d.account,
            device: d.device,
            e2e: E2e::from_pickle(d.e2e).context("e2e account")?,
            peers: d.peers,
            seen: d.seen,
            groups: d.groups,
            history: d.history,
            pending_link_secret: d
                .pending_link_secret
                .as_deref()
                .map(hex::decode)
                .transpose()
                .context("pending_link_secret")?,
            transport: match d.transport.as_deref() {
                None => TransportKind::default(),
                Some(t) => TransportKind::parse(t)
                    .with_context(|| format!("transport: unknown transport {t:?}"))?,
            },
            http: d.http,
            ca: d.ca,
            trust: d.trust,
        })
    }

    /// Writes the state atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        crate::files::create_private_dir(&self.home)?;
        let d = OnDisk {
            relay: self.relay.clone(),
            noise_private: hex::encode(self.noise.private),
            relay_key: self.relay_key.map(hex::encode),
            token: self.token.as_ref().map(hex::encode),
            account: self.account.clone(),
            device: self.device,
            e2e: self.e2e.to_pickle(),
            peers: self.peers.clone(),
            seen: self.seen.clone(),
            groups: self.groups.clone(),
            history: self.history.clone(),
            pending_link_secret: self.pending_link_secret.as_ref().map(hex::encode),
            http: self.http.clone(),
            transport: Some(self.transport.as_str().to_owned()),
            ca: self.ca.clone(),
            trust: self.trust.clone(),
        };
        let path = self.home.join(STATE_FILE);
        let tmp = self.home.join(format!("{STATE_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&d)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Remembers a received msg_id; `false` if it was already seen (a redelivery).
    pub fn first_sight(&mut self, msg_id: &[u8]) -> bool {
        let id = hex::encode(msg_id);
        if self.seen.contains(&id) {
            return false;
        }
        if self.seen.len() >= SEEN_MSG_IDS {
            self.seen.pop_front();
        }
        self.seen.push_back(id);
        true
    }

    /// Appends to the local history (bounded).
    pub fn remember(&mut self, entry: HistoryEntry) {
        if self.history.len() >= HISTORY_KEPT {
            self.history.pop_front();
        }
        self.history.push_back(entry);
    }

    /// Where and how to reach the relay.
    pub fn target(&self) -> Target {
        Target {
            tcp: self.relay.clone(),
            http: self.http.clone(),
            kind: self.transport,
            ca: self.ca.clone(),
        }
    }

    /// The registered account, or an error telling the user to register first.
    pub fn account(&self) -> anyhow::Result<&str> {
        self.account.as_deref().ok_or_else(|| {
            anyhow::anyhow!("this client is not registered yet: run `relaybox client register <phone>` then `verify`")
        })
    }
}

fn hex32(s: &str) -> anyhow::Result<[u8; 32]> {
    let v = hex::decode(s)?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| anyhow::anyhow!("expected 32 bytes, got {}", v.len()))
}
