//! The configuration tree: one serde struct per section, its defaults, and how it is loaded.
//!
//! This module owns what every setting means, its default, and the rules a value must obey.
//! It does not own where the file lives or which flags exist (that is the CLI), and it never
//! reads the process environment itself: the caller passes the variables in, so tests can too.
//!
//! Layers, later wins: defaults in code < the config file < `RELAYBOX_*` environment variables
//! < `--set section.key=value` flags. [`load`] reports every problem it finds, across all layers,
//! before anything is started; the binary then exits with [`EXIT_BAD_CONFIG`].
//!
//! [`DEFAULT_TOML`] is the commented default file (`relaybox print-config`); a test keeps it equal
//! to [`Config::default`], so the code is the one source of truth for defaults.

mod abuse;
mod error;
mod load;
pub mod pem;
mod spans;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use phonenumber::country;
use serde::{Deserialize, Serialize};

pub use abuse::{check_ladder, parse_step, AbuseConfig, BanLength, PERMANENT};
pub use error::{ConfigError, ConfigErrors, Origin};
pub use load::{load, load_str, parse_override, Sources};

/// The embedded default configuration file: every key, its default and what it is for.
pub const DEFAULT_TOML: &str = include_str!("../../config/relaybox.toml");

/// Process exit code for a configuration the relay refuses (`EX_USAGE` from `sysexits.h`),
/// returned before any port is bound.
pub const EXIT_BAD_CONFIG: i32 = 64;

/// The whole configuration. Every section and key has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub relay: RelayConfig,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub registration: RegistrationConfig,
    pub messaging: MessagingConfig,
    pub keys: KeysConfig,
    pub sessions: SessionsConfig,
    pub groups: GroupsConfig,
    pub entities: EntitiesConfig,
    pub muting: MutingConfig,
    pub push: PushConfig,
    pub blobs: BlobsConfig,
    pub mqtt: MqttConfig,
    pub abuse: AbuseConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
}

/// `[relay]`: the process as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// The one data directory (store, keys, blobs). A relative path is relative to the
    /// working directory; under systemd that is the `StateDirectory`.
    pub data_dir: PathBuf,
    /// How long a shutdown waits for sessions to drain before closing them.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// New messages and uploads are refused (`storage_full`) while the data directory's
    /// filesystem has less free space than this; 0 turns the check off.
    pub min_free_disk_bytes: u64,
    /// The most memory the store keeps as a cache of its pages. The store itself lives on
    /// disk; this bounds how much of it stays in memory (sled's own default is 1 GiB, which
    /// let RSS follow the store's size).
    pub store_cache_bytes: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("relaybox-data"),
            shutdown_grace: Duration::from_secs(10),
            min_free_disk_bytes: 64 * 1024 * 1024,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

/// `[listen]`: where the relay accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// The Noise-over-TCP listener. Loopback by default so a relay started with no
    /// configuration is not reachable from the network.
    pub tcp: SocketAddr,
    /// The public HTTP listener: WebSocket (`/v1/ws`), the chunked-HTTP stream (`/v1/stream`)
    /// and blobs. Plain HTTP unless `[tls]` names a certificate.
    pub http: SocketAddr,
    /// The operator API (`relaybox admin`, `/metrics`, `/healthz`, `/readyz`). Must be a
    /// loopback address: the API can remove devices and export the whole store.
    pub admin: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            tcp: SocketAddr::from((Ipv4Addr::LOCALHOST, 7700)),
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 7780)),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 7790)),
        }
    }
}

/// `[tls]`: HTTPS on the public HTTP listener. Both empty: plain HTTP; both set: HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    /// Whether HTTPS is configured (validation ensures both paths or neither).
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() && !self.key.as_os_str().is_empty()
    }
}

/// `[limits]`: bounds on connections, rates, frames and deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open client connections in total; further connections are refused.
    pub max_connections: u32,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: u32,
    /// Handshakes started per second from one IP address (token bucket, burst = this number).
    pub handshakes_per_second_per_ip: u32,
    /// Frames accepted per second from one authenticated device.
    pub frames_per_second_per_device: u32,
    /// Contact-discovery lookups per hour and account: numbers in an UploadContacts that the
    /// account did not already hold (re-sending the same book costs nothing).
    pub contact_lookups_per_hour_per_account: u32,
    /// The same, per IP address (many accounts behind one address share it).
    pub contact_lookups_per_hour_per_ip: u32,
    /// Largest frame payload in bytes, `64..=65535` (the frame length prefix is a `u16`).
    pub max_frame_bytes: u32,
    /// Deadline for completing the Noise handshake and login.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often the relay pings a quiet connection; shorter than `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Deadline for one write to a client socket before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            handshakes_per_second_per_ip: 20,
            frames_per_second_per_device: 200,
            contact_lookups_per_hour_per_account: 10_000,
            contact_lookups_per_hour_per_ip: 20_000,
            max_frame_bytes: 65_535,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// `[registration]`: phone numbers and verification codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Country assumed for phone numbers written without a `+` prefix (ISO 3166 alpha-2).
    #[serde(with = "country_code")]
    pub default_country: country::Id,
    /// How long a verification code stays valid.
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// Wrong guesses allowed for one code before it is discarded.
    pub max_attempts: u32,
    /// Digits in a verification code, `4..=10`.
    pub code_digits: u32,
    /// Codes sent to one phone number per hour.
    pub codes_per_number_per_hour: u32,
    /// Codes requested from one IP address per hour.
    pub codes_per_address_per_hour: u32,
    /// Registrations (successful verifications) from one IP address per hour.
    pub registrations_per_address_per_hour: u32,
    /// How codes reach the user.
    pub verifier: Verifier,
    /// Program and arguments for the `command` verifier; `{phone}` and `{code}` are replaced.
    pub command: Vec<String>,
    /// URL the `webhook` verifier POSTs to (http or https).
    pub webhook_url: String,
    /// Deadline for one verifier call (command run or webhook request).
    #[serde(with = "humantime_serde")]
    pub verifier_timeout: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            default_country: country::Id::US,
            code_ttl: Duration::from_secs(10 * 60),
            max_attempts: 5,
            code_digits: 6,
            codes_per_number_per_hour: 5,
            codes_per_address_per_hour: 20,
            registrations_per_address_per_hour: 10,
            verifier: Verifier::Log,
            command: Vec::new(),
            webhook_url: String::new(),
            verifier_timeout: Duration::from_secs(10),
        }
    }
}

/// How verification codes are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verifier {
    /// Write the code to the log. For development only: anyone who reads the log can register.
    Log,
    /// Run `registration.command` (an SMS gateway script, a GSM modem tool).
    Command,
    /// POST to `registration.webhook_url` (the operator's SMS gateway).
    Webhook,
}

/// `[messaging]`: queues and message sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// An undelivered message is deleted after this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Messages pushed to one device before its acknowledgements are awaited, `1..=1024`.
    pub delivery_window: u32,
    /// Envelopes in one send (one per recipient device).
    pub max_envelopes: u32,
    /// Bytes of ciphertext in one envelope; less than `limits.max_frame_bytes`.
    pub max_ciphertext_bytes: u32,
    /// How often expired messages are swept from the store.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            delivery_window: 64,
            max_envelopes: 1024,
            max_ciphertext_bytes: 60_000,
            sweep_interval: Duration::from_secs(60 * 60),
        }
    }
}

/// `[keys]`: the one-time key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// A device holding fewer one-time keys than this is asked to upload more.
    pub one_time_keys_low: u32,
    /// How many one-time keys a device is asked to hold.
    pub one_time_keys_wanted: u32,
    /// One-time keys stored per device; uploads beyond this are refused.
    pub max_one_time_keys: u32,
    /// One-time keys all claimers together may take from one device per hour; further
    /// claims get its fallback key, so the device's one-time keys cannot be drained.
    pub one_time_claims_per_device_per_hour: u32,
    /// Key bundles one account may claim per hour (RATE_LIMITED beyond).
    pub claims_per_account_per_hour: u32,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            one_time_keys_low: 10,
            one_time_keys_wanted: 50,
            max_one_time_keys: 200,
            one_time_claims_per_device_per_hour: 20,
            claims_per_account_per_hour: 600,
        }
    }
}

/// `[groups]`: group chats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Most members in one group.
    pub max_members: u32,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self { max_members: 256 }
    }
}

/// `[entities]`: multi-agent business entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    /// An entity with an automatic policy assigns a customer thread by itself once its
    /// administrator has had no live session for this long (per-entity override possible).
    #[serde(with = "humantime_serde")]
    pub auto_assign_after: Duration,
    /// Most agents in one entity.
    pub max_agents: u32,
}

impl Default for EntitiesConfig {
    fn default() -> Self {
        Self {
            auto_assign_after: Duration::from_secs(300),
            max_agents: 64,
        }
    }
}

/// `[muting]`: how long a group mute with no explicit end lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MutingConfig {
    /// Mute time per group participant: a busier group stays muted longer.
    #[serde(with = "humantime_serde")]
    pub per_participant: Duration,
    /// The longest such a mute lasts.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for MutingConfig {
    fn default() -> Self {
        Self {
            per_participant: Duration::from_secs(10 * 60),
            max: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[push]`: notifications to offline devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The `host:port` clients should connect to, put in push notifications. Empty: the
    /// TCP listen address.
    pub relay_address: String,
    /// The only hosts (names or IP literals) push endpoints may name. Empty: any host that
    /// does not resolve to a loopback, link-local or non-unicast address.
    pub allowed_hosts: Vec<String>,
}

/// `[blobs]`: end-to-end encrypted media and history files, uploaded over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// Whether the relay stores blobs at all; off, upload requests are refused.
    pub enabled: bool,
    /// Largest blob in bytes (all of its segments together).
    pub max_blob_bytes: u64,
    /// Bytes of blobs one account may hold at once.
    pub account_quota_bytes: u64,
    /// A blob is deleted this long after its upload (its id then answers 410 Gone).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Lifetime of a signed upload or download URL.
    #[serde(with = "humantime_serde")]
    pub url_ttl: Duration,
    /// How often expired blobs are removed.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// How long an expired or purged blob's id keeps answering 410 Gone (so that a recipient
    /// asks the sender to send it again) before the relay forgets it.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_blob_bytes: 100 * 1024 * 1024,
            account_quota_bytes: 1024 * 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            url_ttl: Duration::from_secs(15 * 60),
            gc_interval: Duration::from_secs(10 * 60),
            tombstone_retention: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// `[sessions]`: resumption tokens and device actors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Lifetime of a resumption token; after it the client falls back to a full handshake.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// A device actor with no session and no work stops after this long.
    #[serde(with = "humantime_serde")]
    pub device_idle_stop: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            device_idle_stop: Duration::from_secs(60),
        }
    }
}

/// `[mqtt]`: the bridge to the site's MQTT broker for constrained devices (DESIGN.md §9).
/// Empty strings mean "not set" (TOML has no null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Run the bridge. Off by default: a relay with no configuration talks to no broker.
    pub enabled: bool,
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port (1883 plain, 8883 TLS by convention).
    pub port: u16,
    /// The relay's MQTT client id. Stable, so the broker keeps its persistent session.
    pub client_id: String,
    /// User name for the broker; empty: none.
    pub username: String,
    /// Password for the broker; prefer `password_file`.
    pub password: String,
    /// File holding the broker password (first line); wins over `password`.
    pub password_file: String,
    /// Connect with TLS (rustls, ring provider).
    pub tls: bool,
    /// PEM file of the CA that signed the broker's certificate; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate for mutual TLS; empty: none.
    pub tls_client_cert_file: String,
    /// PEM private key of `tls_client_cert_file`.
    pub tls_client_key_file: String,
    /// MQTT keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Start a clean session on connect. False keeps the broker's persistent session, so QoS 1
    /// messages for the relay survive a relay restart.
    pub clean_session: bool,
    /// Topic prefix: devices use `{prefix}/dev/{id}/up|down|ack|status`.
    pub prefix: String,
    /// Largest up/ack payload accepted; bigger ones are dropped and counted.
    pub max_payload_bytes: u32,
    /// First wait before reconnecting to the broker; doubles up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: "localhost".to_owned(),
            port: 1883,
            client_id: "relaybox".to_owned(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            tls: false,
            tls_ca_file: String::new(),
            tls_client_cert_file: String::new(),
            tls_client_key_file: String::new(),
            keep_alive: Duration::from_secs(30),
            clean_session: false,
            prefix: "relaybox".to_owned(),
            max_payload_bytes: 16 * 1024,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// `[audit]`: the operator audit log (`<data_dir>/audit.log`) and its rotation by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The live file is rotated before a line would take it past this many bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept beside the live one (`audit.log.1` newest); older ones are deleted.
    pub keep_files: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

/// Smallest `audit.max_file_bytes`: a file must hold a good number of entries (a line is a
/// few hundred bytes), or rotation would churn.
pub const MIN_AUDIT_FILE_BYTES: u64 = 4096;
/// Most rotated audit files kept: backups carry them all.
pub const MAX_AUDIT_KEEP_FILES: u32 = 100;

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive, e.g. `"info"` or `"info,relaybox::edge=debug"`.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Config {
    /// Checks the rules that types cannot express (ranges, cross-key constraints), for a
    /// `Config` built in code. [`load`] already does this, naming where each value came from.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = validate::validate(self, &Default::default());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// Serde for a country as its ISO 3166 alpha-2 code (`"US"`), case-insensitive on input.
///
/// `country::Id`'s own serde would accept only upper case and, on a typo, list all 250 codes.
mod country_code {
    use std::str::FromStr;

    use phonenumber::country;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &country::Id, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_ref())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<country::Id, D::Error> {
        let text = String::deserialize(d)?;
        country::Id::from_str(&text.to_ascii_uppercase()).map_err(|_| {
            de::Error::custom(format!(
                "unknown country code `{text}`: expected an ISO 3166 alpha-2 code such as \"US\" or \"DE\""
            ))
        })
    }
}

/// A configured count as a `usize` (lossless on every target relaybox supports).
pub fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn embedded_default_file_equals_code_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).expect("the embedded file parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn embedded_default_file_lists_every_key_and_no_other() {
        let file: toml::Table = toml::from_str(DEFAULT_TOML).expect("the embedded file parses");
        let code = toml::Table::try_from(Config::default()).expect("defaults serialise");
        let keys = |t: &toml::Table| {
            let mut keys = Vec::new();
            for (section, table) in t {
                for key in table.as_table().expect("sections are tables").keys() {
                    keys.push(format!("{section}.{key}"));
                }
            }
            keys.sort();
            keys
        };
        assert_eq!(keys(&file), keys(&code));
    }

    #[test]
    fn every_key_in_the_embedded_file_has_a_comment_above_it() {
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_key = line.contains('=') && !line.starts_with('#') && !line.starts_with(' ');
            if is_key {
                let above = i.checked_sub(1).map(|j| lines[j]).unwrap_or("");
                assert!(above.starts_with('#'), "`{line}` has no comment above it");
            }
        }
    }

    #[test]
    fn default_config_passes_validation() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn country_codes_are_case_insensitive() {
        let config: Config = toml::from_str("[registration]\ndefault_country = \"de\"").unwrap();
        assert_eq!(config.registration.default_country, country::Id::DE);
    }
}
