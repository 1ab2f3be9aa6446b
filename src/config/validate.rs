//! The rules a well-typed configuration must still obey: ranges, non-zero durations, and
//! constraints between keys.
//!
//! Types already rule out most bad values (an address without a port, a negative count); this
//! module holds only what they cannot say. It does no parsing and knows nothing of layers
//! beyond the `Origins` it is handed to name them.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::{Config, ConfigError, Origin, Verifier};

/// Which layer last set each key (`"section.key"`); a key not in the map has its default.
pub(super) type Origins = BTreeMap<String, Origin>;

/// Collects violations, naming for each key the layer its value came from.
struct Checker<'a> {
    origins: &'a Origins,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or_default()
    }

    fn reject(&mut self, key: &str, message: String) {
        let origin = self.origin(key);
        self.errors.push(ConfigError::Rejected {
            key: key.to_owned(),
            origin,
            message,
        });
    }

    /// `other` and, when it is not a default, where it was set: for messages about two keys.
    fn describe(&self, other: &str) -> String {
        match self.origin(other) {
            Origin::Default => other.to_owned(),
            origin => format!("{other} (set in {origin})"),
        }
    }

    fn in_range(&mut self, key: &str, value: u32, range: RangeInclusive<u32>) {
        if !range.contains(&value) {
            let (lo, hi) = range.into_inner();
            self.reject(key, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    fn at_least_one(&mut self, key: &str, value: u32) {
        if value == 0 {
            self.reject(key, "must be at least 1".to_owned());
        }
    }

    fn positive(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.reject(key, "must be longer than zero".to_owned());
        }
    }
}

/// Every rule broken by `config`, in key order within each section.
pub(super) fn validate(config: &Config, origins: &Origins) -> Vec<ConfigError> {
    let mut c = Checker {
        origins,
        errors: Vec::new(),
    };

    relay(&mut c, config);
    tls(&mut c, config);
    listen(&mut c, config);
    limits(&mut c, config);
    registration(&mut c, config);
    messaging(&mut c, config);
    keys_and_threads(&mut c, config);
    abuse(&mut c, config);
    blobs_and_audit(&mut c, config);
    mqtt_and_log(&mut c, config);
    c.errors
}

/// `[relay]`, the operator API's address and the push hosts.
fn relay(c: &mut Checker, config: &Config) {
    let relay = &config.relay;
    if relay.data_dir.as_os_str().is_empty() {
        c.reject("relay.data_dir", "must not be empty".to_owned());
    }
    c.positive("relay.shutdown_grace", relay.shutdown_grace);
    if relay.store_cache_bytes < crate::store::MIN_CACHE_BYTES {
        c.reject(
            "relay.store_cache_bytes",
            format!(
                "must be at least {} (1 MiB), got {}",
                crate::store::MIN_CACHE_BYTES,
                relay.store_cache_bytes
            ),
        );
    }

    // The operator API holds a bearer token only; the network must not reach it at all.
    if !config.listen.admin.ip().is_loopback() {
        c.reject(
            "listen.admin",
            format!(
                "must be a loopback address (127.0.0.1 or [::1]), got {}; the operator API is \
                 never exposed to the network (reach it through SSH or a local proxy)",
                config.listen.admin
            ),
        );
    }

    for host in &config.push.allowed_hosts {
        let h = host.trim();
        if h.is_empty() || h.contains(['/', ' ', '@', '?', '#']) {
            c.reject(
                "push.allowed_hosts",
                format!("each entry is a host name or IP address (no scheme, port or path), got {host:?}"),
            );
        }
    }
}

/// `[tls]`: both files or neither, and each readable.
fn tls(c: &mut Checker, config: &Config) {
    let tls = &config.tls;
    match (
        tls.cert.as_os_str().is_empty(),
        tls.key.as_os_str().is_empty(),
    ) {
        (true, true) => {}
        (false, true) => c.reject(
            "tls.key",
            format!(
                "{} is set, so this must name its private key file",
                c.describe("tls.cert")
            ),
        ),
        (true, false) => c.reject(
            "tls.cert",
            format!(
                "{} is set, so this must name the certificate file",
                c.describe("tls.key")
            ),
        ),
        (false, false) => {
            // Parsed here, not only at bind time, so that a bad file is a config error (exit 64)
            // reported with every other one.
            if let Err(e) = super::pem::read_certs(&tls.cert) {
                c.reject("tls.cert", format!("unusable certificate: {e}"));
            }
            if let Err(e) = super::pem::read_key(&tls.key) {
                c.reject("tls.key", format!("unusable private key: {e}"));
            }
        }
    }
}

/// `[listen]`.
fn listen(c: &mut Checker, config: &Config) {
    let listen = &config.listen;
    if listen.admin.port() != 0 && listen.admin.port() == listen.tcp.port() {
        let other = c.describe("listen.tcp");
        c.reject(
            "listen.admin",
            format!(
                "must use another port than {other} (both are {})",
                listen.tcp.port()
            ),
        );
    }
}

/// `[limits]`.
fn limits(c: &mut Checker, config: &Config) {
    let limits = &config.limits;
    c.at_least_one("limits.max_connections", limits.max_connections);
    c.at_least_one(
        "limits.max_connections_per_ip",
        limits.max_connections_per_ip,
    );
    c.at_least_one(
        "limits.handshakes_per_second_per_ip",
        limits.handshakes_per_second_per_ip,
    );
    c.at_least_one(
        "limits.frames_per_second_per_device",
        limits.frames_per_second_per_device,
    );
    // One full address book must fit, or a new device could never upload its contacts.
    let book = u32::try_from(crate::wire::messages::MAX_CONTACTS).unwrap_or(u32::MAX);
    for (key, value) in [
        (
            "limits.contact_lookups_per_hour_per_account",
            limits.contact_lookups_per_hour_per_account,
        ),
        (
            "limits.contact_lookups_per_hour_per_ip",
            limits.contact_lookups_per_hour_per_ip,
        ),
    ] {
        if value < book {
            c.reject(
                key,
                format!("must be at least {book} (one full UploadContacts), got {value}"),
            );
        }
    }
    c.in_range(
        "limits.max_frame_bytes",
        limits.max_frame_bytes,
        64..=65_535,
    );
    c.positive("limits.handshake_timeout", limits.handshake_timeout);
    c.positive("limits.idle_timeout", limits.idle_timeout);
    c.positive("limits.ping_interval", limits.ping_interval);
    c.positive("limits.write_timeout", limits.write_timeout);
    // A ping must go out before the idle deadline, or every quiet connection is dropped.
    if limits.ping_interval >= limits.idle_timeout {
        let other = c.describe("limits.idle_timeout");
        c.reject(
            "limits.ping_interval",
            format!(
                "must be shorter than {other} ({} >= {})",
                humantime::format_duration(limits.ping_interval),
                humantime::format_duration(limits.idle_timeout)
            ),
        );
    }
}

/// `[registration]`.
fn registration(c: &mut Checker, config: &Config) {
    let reg = &config.registration;
    c.positive("registration.code_ttl", reg.code_ttl);
    c.at_least_one("registration.max_attempts", reg.max_attempts);
    c.in_range("registration.code_digits", reg.code_digits, 4..=10);
    c.at_least_one(
        "registration.codes_per_number_per_hour",
        reg.codes_per_number_per_hour,
    );
    c.at_least_one(
        "registration.codes_per_address_per_hour",
        reg.codes_per_address_per_hour,
    );
    if reg.verifier == Verifier::Command
        && reg.command.first().is_none_or(|program| program.is_empty())
    {
        let other = c.describe("registration.verifier");
        c.reject(
            "registration.command",
            format!(
                "{other} is \"command\", so this must name a program, \
                 e.g. [\"/usr/local/bin/send-sms\", \"{{phone}}\", \"{{code}}\"]"
            ),
        );
    }
    // An unused but malformed URL is still reported: it is a mistake waiting for the day the
    // verifier is switched to "webhook".
    if reg.verifier == Verifier::Webhook || !reg.webhook_url.is_empty() {
        if let Err(problem) = check_http_url(&reg.webhook_url) {
            let message = if reg.webhook_url.is_empty() {
                let other = c.describe("registration.verifier");
                format!("{other} is \"webhook\", so this must be an http or https URL")
            } else {
                format!("`{}` {problem}", reg.webhook_url)
            };
            c.reject("registration.webhook_url", message);
        }
    }
    c.positive("registration.verifier_timeout", reg.verifier_timeout);
}

/// `[messaging]`.
fn messaging(c: &mut Checker, config: &Config) {
    let msg = &config.messaging;
    c.positive("messaging.retention", msg.retention);
    c.in_range("messaging.delivery_window", msg.delivery_window, 1..=1024);
    c.at_least_one("messaging.max_envelopes", msg.max_envelopes);
    c.at_least_one("messaging.max_ciphertext_bytes", msg.max_ciphertext_bytes);
    // The envelope travels in one frame together with the message header.
    if msg.max_ciphertext_bytes >= config.limits.max_frame_bytes {
        let other = c.describe("limits.max_frame_bytes");
        c.reject(
            "messaging.max_ciphertext_bytes",
            format!(
                "must be less than {other} ({} >= {})",
                msg.max_ciphertext_bytes, config.limits.max_frame_bytes
            ),
        );
    }
    c.positive("messaging.sweep_interval", msg.sweep_interval);
}

/// `[keys]`, `[sessions]`, `[groups]`, `[muting]` and `[entities]`.
fn keys_and_threads(c: &mut Checker, config: &Config) {
    let keys = &config.keys;
    c.at_least_one("keys.max_one_time_keys", keys.max_one_time_keys);
    if keys.one_time_keys_wanted > keys.max_one_time_keys {
        let other = c.describe("keys.max_one_time_keys");
        c.reject(
            "keys.one_time_keys_wanted",
            format!(
                "must not exceed {other} ({} > {})",
                keys.one_time_keys_wanted, keys.max_one_time_keys
            ),
        );
    }
    c.at_least_one(
        "keys.one_time_claims_per_device_per_hour",
        keys.one_time_claims_per_device_per_hour,
    );
    c.at_least_one(
        "keys.claims_per_account_per_hour",
        keys.claims_per_account_per_hour,
    );
    if keys.one_time_keys_low >= keys.one_time_keys_wanted {
        let other = c.describe("keys.one_time_keys_wanted");
        c.reject(
            "keys.one_time_keys_low",
            format!(
                "must be less than {other} ({} >= {})",
                keys.one_time_keys_low, keys.one_time_keys_wanted
            ),
        );
    }

    c.positive("sessions.token_ttl", config.sessions.token_ttl);
    c.at_least_one("groups.max_members", config.groups.max_members);
    c.positive("muting.per_participant", config.muting.per_participant);
    c.at_least_one("entities.max_agents", config.entities.max_agents);
    c.positive("muting.max", config.muting.max);
}

/// `[abuse]`.
fn abuse(c: &mut Checker, config: &Config) {
    let abuse = &config.abuse;
    c.positive("abuse.window", abuse.window);
    c.positive("abuse.evaluate_every", abuse.evaluate_every);
    c.positive("abuse.watch_evaluate_every", abuse.watch_evaluate_every);
    c.positive("abuse.history_decay", abuse.history_decay);
    if let Some(e) = super::check_ladder(&abuse.ban_ladder) {
        c.reject("abuse.ban_ladder", e);
    }
    c.at_least_one("abuse.min_messages", abuse.min_messages);
    c.at_least_one("abuse.watched_min_messages", abuse.watched_min_messages);
    c.at_least_one("abuse.watch_min_messages", abuse.watch_min_messages);
    for (key, v) in [
        ("abuse.max_symmetry_percent", abuse.max_symmetry_percent),
        (
            "abuse.min_peer_uniqueness_percent",
            abuse.min_peer_uniqueness_percent,
        ),
        (
            "abuse.max_message_uniqueness_percent",
            abuse.max_message_uniqueness_percent,
        ),
        ("abuse.block_rate_percent", abuse.block_rate_percent),
    ] {
        c.in_range(key, v, 0..=100);
    }
    c.at_least_one("abuse.min_blocks", abuse.min_blocks);
    c.at_least_one("abuse.sends_per_minute", abuse.sends_per_minute);
    c.at_least_one(
        "abuse.new_conversations_per_minute",
        abuse.new_conversations_per_minute,
    );
    c.at_least_one(
        "registration.registrations_per_address_per_hour",
        config.registration.registrations_per_address_per_hour,
    );
    c.positive(
        "sessions.device_idle_stop",
        config.sessions.device_idle_stop,
    );
}

/// `[blobs]` and `[audit]`.
fn blobs_and_audit(c: &mut Checker, config: &Config) {
    let blobs = &config.blobs;
    if blobs.max_blob_bytes == 0 {
        c.reject("blobs.max_blob_bytes", "must be at least 1".to_owned());
    }
    if blobs.account_quota_bytes < blobs.max_blob_bytes {
        let other = c.describe("blobs.max_blob_bytes");
        c.reject(
            "blobs.account_quota_bytes",
            format!(
                "must be at least {other} ({} < {})",
                blobs.account_quota_bytes, blobs.max_blob_bytes
            ),
        );
    }
    let audit = &config.audit;
    if audit.max_file_bytes < super::MIN_AUDIT_FILE_BYTES {
        c.reject(
            "audit.max_file_bytes",
            format!(
                "must be at least {} (4 KiB), got {}",
                super::MIN_AUDIT_FILE_BYTES,
                audit.max_file_bytes
            ),
        );
    }
    c.in_range(
        "audit.keep_files",
        audit.keep_files,
        1..=super::MAX_AUDIT_KEEP_FILES,
    );

    c.positive("blobs.retention", blobs.retention);
    c.positive("blobs.url_ttl", blobs.url_ttl);
    c.positive("blobs.gc_interval", blobs.gc_interval);
    // A message naming a blob may wait in a queue for messaging.retention; its recipient must
    // then still be told 410 (and recall it), not meet an id the relay forgot.
    if blobs.tombstone_retention < config.messaging.retention {
        let other = c.describe("messaging.retention");
        c.reject(
            "blobs.tombstone_retention",
            format!(
                "must be at least {other} ({} < {}), so that a recipient of a message still queued learns its blob is gone",
                humantime::format_duration(blobs.tombstone_retention),
                humantime::format_duration(config.messaging.retention)
            ),
        );
    }
}

/// `[mqtt]` and `[log]`.
fn mqtt_and_log(c: &mut Checker, config: &Config) {
    let mqtt = &config.mqtt;
    if mqtt.enabled {
        if mqtt.host.is_empty() {
            c.reject(
                "mqtt.host",
                "must name the broker when mqtt.enabled is true".to_owned(),
            );
        }
        if mqtt.client_id.is_empty() {
            c.reject("mqtt.client_id", "must not be empty".to_owned());
        }
        if mqtt.tls_client_cert_file.is_empty() != mqtt.tls_client_key_file.is_empty() {
            c.reject(
                "mqtt.tls_client_key_file",
                "must be set together with mqtt.tls_client_cert_file".to_owned(),
            );
        }
    }
    if mqtt.prefix.is_empty()
        || mqtt.prefix.len() > 64
        || mqtt.prefix.contains(['+', '#', '\0'])
        || mqtt.prefix.starts_with('/')
        || mqtt.prefix.ends_with('/')
    {
        c.reject(
            "mqtt.prefix",
            format!(
                "`{}` must be 1 to 64 characters without MQTT wildcards (+ #) or a leading or trailing /",
                mqtt.prefix
            ),
        );
    }
    c.in_range(
        "mqtt.max_payload_bytes",
        mqtt.max_payload_bytes,
        64..=262_144,
    );
    c.positive("mqtt.keep_alive", mqtt.keep_alive);
    c.positive("mqtt.reconnect_min", mqtt.reconnect_min);
    if mqtt.reconnect_max < mqtt.reconnect_min {
        c.reject(
            "mqtt.reconnect_max",
            "must not be shorter than mqtt.reconnect_min".to_owned(),
        );
    }

    if let Err(problem) = check_log_level(&config.log.level) {
        c.reject("log.level", problem);
    }
}

/// Accepts `http://host…` and `https://host…`. A full URL parser is the webhook client's job;
/// this catches the mistakes an operator makes in a config file.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err("has no host");
    }
    if url.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    Ok(())
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Accepts what `tracing_subscriber::EnvFilter` accepts, except a bare word (no `=`, `::` or
/// `[`) that is not a level: `EnvFilter` reads "inf" as "everything from target `inf`", which
/// silently turns logging off. A target alone is still possible as `target=trace`.
fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty; use \"off\" to disable logging".to_owned());
    }
    for directive in level.split(',').map(str::trim) {
        let bare_word = !directive.is_empty() && !directive.contains(['=', '[', ':']);
        if bare_word && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a level (one of {}); for a module, write `{directive}=debug`",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| format!("not a valid filter directive: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn rejected_keys(config: &Config) -> Vec<String> {
        validate(config, &Origins::new())
            .into_iter()
            .map(|e| match e {
                ConfigError::Rejected { key, .. } => key,
                other => panic!("unexpected error {other}"),
            })
            .collect()
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let mut config = Config::default();
        config.limits.max_frame_bytes = 63;
        config.limits.ping_interval = Duration::from_secs(200);
        config.registration.code_digits = 11;
        config.registration.verifier = Verifier::Command;
        config.messaging.delivery_window = 0;
        config.sessions.token_ttl = Duration::ZERO;
        config.log.level = "infoo".into();
        assert_eq!(
            rejected_keys(&config),
            [
                "limits.max_frame_bytes",
                "limits.ping_interval",
                "registration.code_digits",
                "registration.command",
                "messaging.delivery_window",
                "messaging.max_ciphertext_bytes",
                "sessions.token_ttl",
                "log.level",
            ]
        );
    }

    #[test]
    fn webhook_verifier_needs_an_http_url() {
        let mut config = Config::default();
        config.registration.verifier = Verifier::Webhook;
        assert_eq!(rejected_keys(&config), ["registration.webhook_url"]);
        config.registration.webhook_url = "ftp://gateway/sms".into();
        assert_eq!(rejected_keys(&config), ["registration.webhook_url"]);
        config.registration.webhook_url = "https://".into();
        assert_eq!(rejected_keys(&config), ["registration.webhook_url"]);
        config.registration.webhook_url = "https://sms.example/send?x=1".into();
        assert!(rejected_keys(&config).is_empty());
    }

    #[test]
    fn log_levels_with_module_refinements_are_accepted() {
        for level in [
            "info",
            "WARN",
            "off",
            "info,relaybox::edge=debug",
            "relaybox=trace",
        ] {
            assert_eq!(check_log_level(level), Ok(()), "{level}");
        }
        for level in ["", "infoo", "info,relaybox"] {
            assert!(check_log_level(level).is_err(), "{level}");
        }
    }

    #[test]
    fn a_message_about_two_keys_says_where_the_other_was_set() {
        let mut config = Config::default();
        config.limits.idle_timeout = Duration::from_secs(20);
        let origins = Origins::from([(
            "limits.idle_timeout".to_owned(),
            Origin::Env("RELAYBOX_LIMITS_IDLE_TIMEOUT".into()),
        )]);
        let errors = validate(&config, &origins);
        assert_eq!(
            errors[0].to_string(),
            "limits.ping_interval (built-in default): must be shorter than limits.idle_timeout \
             (set in environment variable RELAYBOX_LIMITS_IDLE_TIMEOUT) (30s >= 20s)"
        );
    }
}
