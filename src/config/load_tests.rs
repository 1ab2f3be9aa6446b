//! Loading through every layer, as the CLI does, with env and flags passed as lists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use phonenumber::country;

use super::*;
use crate::config::{LogFormat, Verifier};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_ok(text: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Config {
    match load_str(text, &pairs(env), &pairs(overrides)) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

/// The errors, one display line each.
fn load_err(text: &str, env: &[(&str, &str)], overrides: &[(&str, &str)]) -> Vec<String> {
    match load_str(text, &pairs(env), &pairs(overrides)) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn empty_text_gives_the_defaults() {
    assert_eq!(load_ok("", &[], &[]), Config::default());
}

#[test]
fn every_bad_key_is_reported_not_just_the_first() {
    let text = "\
[limits]
max_conections = 5
max_frame_bytes = \"big\"
idle_timeout = \"2 fortnights\"

[registration]
default_country = \"XX\"
code_digits = 3

[logg]
level = \"debug\"
";
    let errors = load_err(text, &[], &[]);
    assert_eq!(
        errors,
        [
            "limits.max_conections (<config text>:2): unknown key; \
             did you mean `limits.max_connections`?",
            "limits.max_frame_bytes (<config text>:3): invalid type: string \"big\", expected u32",
            "limits.idle_timeout (<config text>:4): invalid value: string \"2 fortnights\", \
             expected a duration (the default is \"2m\")",
            "registration.default_country (<config text>:7): unknown country code `XX`: \
             expected an ISO 3166 alpha-2 code such as \"US\" or \"DE\" (the default is \"US\")",
            "logg (<config text>:10): unknown section; did you mean `log`?",
            "registration.code_digits (<config text>:8): must be between 4 and 10, got 3",
        ]
    );
}

#[test]
fn malformed_toml_reports_the_line() {
    let text = "[limits]\nmax_connections = 5\nidle_timeout = \"120s\n";
    let errors = load_err(text, &[], &[]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("<config text>:3:"),
        "should name line 3: {}",
        errors[0]
    );
    assert!(!errors[0].contains('\n'), "one error, one line");
}

#[test]
fn a_syntax_error_does_not_hide_errors_in_other_layers() {
    let errors = load_err(
        "[limits\n",
        &[("RELAYBOX_LIMITS_MAX_CONNECTIONS", "many")],
        &[("log.levle", "debug")],
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("<config text>:1:"));
    assert!(errors[1].starts_with(
        "limits.max_connections (environment variable RELAYBOX_LIMITS_MAX_CONNECTIONS): "
    ));
    assert_eq!(
        errors[2],
        "log.levle (--set): unknown key; did you mean `log.level`?"
    );
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let text = "[listen]\ntcp = \"0.0.0.0:7700\"\n[limits]\nmax_connections = 100\n";
    let env = [
        ("RELAYBOX_LISTEN_TCP", "127.0.0.1:9000"),
        ("RELAYBOX_LIMITS_MAX_CONNECTIONS", "200"),
    ];
    let flags = [
        ("limits.max_connections", "300"),
        ("limits.max_connections", "400"),
    ];
    let config = load_ok(text, &env, &flags);
    let tcp: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert_eq!(config.listen.tcp, tcp);
    assert_eq!(config.limits.max_connections, 400, "the last --set wins");

    let config = load_ok(text, &env, &[]);
    assert_eq!(config.limits.max_connections, 200);
    let config = load_ok(text, &[], &[]);
    assert_eq!(config.limits.max_connections, 100);
}

#[test]
fn env_and_flag_values_are_typed_by_their_key() {
    let env = [
        ("RELAYBOX_REGISTRATION_DEFAULT_COUNTRY", "DE"),
        ("RELAYBOX_REGISTRATION_VERIFIER", "command"),
        (
            "RELAYBOX_REGISTRATION_COMMAND",
            r#"["/usr/local/bin/send-sms", "{phone}", "{code}"]"#,
        ),
        ("RELAYBOX_MESSAGING_RETENTION", "7d"),
        ("RELAYBOX_LOG_FORMAT", "json"),
        // Valid TOML (a local time), but data_dir is a string key: taken as written.
        ("RELAYBOX_RELAY_DATA_DIR", "10:30:00"),
    ];
    let flags = [
        ("log.level", "\"debug\""),
        ("keys.max_one_time_keys", "100"),
    ];
    let config = load_ok("", &env, &flags);
    assert_eq!(config.registration.default_country, country::Id::DE);
    assert_eq!(config.registration.verifier, Verifier::Command);
    assert_eq!(config.registration.command.len(), 3);
    assert_eq!(
        config.messaging.retention,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.log.level, "debug",
        "a quoted TOML string is unquoted"
    );
    assert_eq!(config.relay.data_dir, PathBuf::from("10:30:00"));
    assert_eq!(config.keys.max_one_time_keys, 100);
}

#[test]
fn unknown_env_variable_is_an_error() {
    let env = [
        ("RELAYBOX_LIMITS_MAX_CONECTIONS", "5"),
        ("RELAYBOX_NOPE", "1"),
        ("RELAYBOX_limits_max_connections", "5"),
    ];
    let errors = load_err("", &env, &[]);
    assert_eq!(
        errors,
        [
            "RELAYBOX_LIMITS_MAX_CONECTIONS (environment): not a relaybox setting; \
             did you mean `RELAYBOX_LIMITS_MAX_CONNECTIONS`?",
            "RELAYBOX_NOPE (environment): not a relaybox setting",
            "RELAYBOX_limits_max_connections (environment): not a relaybox setting; \
             did you mean `RELAYBOX_LIMITS_MAX_CONNECTIONS`?",
        ]
    );
}

#[test]
fn non_config_env_variables_are_ignored() {
    let env = [
        ("RELAYBOX_CONFIG", "/somewhere/relaybox.toml"),
        ("RELAYBOX_CLIENT_ACCOUNT", "+15551234567"),
        ("RELAYBOX_ADMIN_TOKEN", "0123456789abcdef"),
        ("HOME", "/home/operator"),
        ("RELAYBOXES", "3"),
    ];
    assert_eq!(load_ok("", &env, &[]), Config::default());
}

#[test]
fn a_key_under_the_wrong_section_suggests_the_right_one() {
    let errors = load_err(
        "[limits]\ndelivery_window = 8\n",
        &[],
        &[("delivery_window", "8")],
    );
    assert_eq!(
        errors,
        [
            "limits.delivery_window (<config text>:2): unknown key; did you mean `messaging.delivery_window`?",
            "delivery_window (--set): unknown section; did you mean `messaging.delivery_window`?",
        ]
    );
}

#[test]
fn a_section_that_is_not_a_table_is_reported() {
    let errors = load_err("limits = 5\n", &[], &[]);
    assert_eq!(
        errors,
        ["limits (<config text>:1): must be a table: write `[limits]` above its keys"]
    );
}

#[test]
fn dotted_keys_and_inline_tables_are_read_like_sections() {
    let config = load_ok(
        "limits.max_connections = 7\nkeys = { max_one_time_keys = 300 }\n",
        &[],
        &[],
    );
    assert_eq!(config.limits.max_connections, 7);
    assert_eq!(config.keys.max_one_time_keys, 300);
}

#[test]
fn a_string_for_a_list_key_suggests_an_array() {
    let errors = load_err("", &[("RELAYBOX_REGISTRATION_COMMAND", "/bin/send")], &[]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("write a TOML array"), "{}", errors[0]);
}

#[test]
fn a_rule_error_names_the_layer_that_set_the_value() {
    let errors = load_err(
        "[limits]\nmax_frame_bytes = 1000\n",
        &[("RELAYBOX_LIMITS_MAX_FRAME_BYTES", "70000")],
        &[],
    );
    assert_eq!(
        errors,
        [
            "limits.max_frame_bytes (environment variable RELAYBOX_LIMITS_MAX_FRAME_BYTES): \
             must be between 64 and 65535, got 70000",
        ]
    );
}

#[test]
fn the_command_verifier_needs_a_program() {
    let errors = load_err("", &[], &[("registration.verifier", "command")]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with(
        "registration.command (built-in default): registration.verifier (set in --set) is \"command\""
    ));
    let config = load_ok(
        "[registration]\nverifier = \"command\"\ncommand = [\"/bin/send\", \"{code}\"]\n",
        &[],
        &[],
    );
    assert_eq!(config.registration.verifier, Verifier::Command);
}

#[test]
fn ping_interval_must_be_shorter_than_idle_timeout() {
    let errors = load_err("[limits]\nidle_timeout = \"30s\"\n", &[], &[]);
    assert_eq!(
        errors,
        [
            "limits.ping_interval (built-in default): must be shorter than limits.idle_timeout \
             (set in <config text>:2) (30s >= 30s)",
        ]
    );
}

#[test]
fn audit_rotation_keys_are_bounded_with_specific_errors() {
    let errors = load_err("[audit]\nmax_file_bytes = 100\nkeep_files = 0\n", &[], &[]);
    assert_eq!(
        errors,
        [
            "audit.max_file_bytes (<config text>:2): must be at least 4096 (4 KiB), got 100",
            "audit.keep_files (<config text>:3): must be between 1 and 100, got 0",
        ]
    );
    let errors = load_err("", &[("RELAYBOX_AUDIT_KEEP_FILES", "101")], &[]);
    assert_eq!(
        errors,
        ["audit.keep_files (environment variable RELAYBOX_AUDIT_KEEP_FILES): must be between 1 and 100, got 101"]
    );
    let ok = load_ok("[audit]\nmax_file_bytes = 4096\nkeep_files = 1\n", &[], &[]);
    assert_eq!(ok.audit.max_file_bytes, 4096);
    assert_eq!(ok.audit.keep_files, 1);
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let errors = load(&Sources {
        file: Some(&path),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(&errors.0[..], [ConfigError::FileNotFound { path: p }] if *p == path));
}

#[test]
fn an_unreadable_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let errors = load(&Sources {
        file: Some(dir.path()),
        ..Sources::default()
    })
    .unwrap_err();
    assert!(matches!(&errors.0[..], [ConfigError::Unreadable { .. }]));
}

#[test]
fn a_file_is_loaded_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relaybox.toml");
    std::fs::write(&path, "[keys]\none_time_keys_low = 20\n").unwrap();
    let env = pairs(&[("RELAYBOX_SESSIONS_TOKEN_TTL", "12h")]);
    let config = load(&Sources {
        file: Some(&path),
        env: &env,
        overrides: &[],
    })
    .unwrap();
    assert_eq!(config.keys.one_time_keys_low, 20);
    assert_eq!(config.sessions.token_ttl, Duration::from_secs(12 * 3600));

    std::fs::write(&path, "[keys]\none_time_keys_low = 99\n").unwrap();
    let errors = load(&Sources {
        file: Some(&path),
        ..Sources::default()
    })
    .unwrap_err();
    let expected = format!(
        "keys.one_time_keys_low ({}:2): must be less than",
        path.display()
    );
    assert!(errors.to_string().starts_with(&expected), "{errors}");
}

#[test]
fn set_arguments_split_at_the_first_equals_sign() {
    assert_eq!(
        parse_override("registration.webhook_url=https://gw/sms?a=b").unwrap(),
        (
            "registration.webhook_url".to_owned(),
            "https://gw/sms?a=b".to_owned()
        )
    );
    assert!(matches!(
        parse_override("limits.max_connections"),
        Err(ConfigError::MalformedOverride { .. })
    ));
    assert!(parse_override("=5").is_err());
}

#[test]
fn the_embedded_default_file_loads_cleanly() {
    assert_eq!(
        load_ok(crate::config::DEFAULT_TOML, &[], &[]),
        Config::default()
    );
}

#[test]
fn an_admin_listener_off_loopback_is_refused_with_the_reason() {
    let errors = load_err("[listen]\nadmin = \"0.0.0.0:7790\"\n", &[], &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("listen.admin"), "{errors:?}");
    assert!(errors[0].contains("loopback"), "{errors:?}");
    let errors = load_err(
        "[listen]\ntcp = \"127.0.0.1:7700\"\nadmin = \"127.0.0.1:7700\"\n",
        &[],
        &[],
    );
    assert!(errors[0].contains("another port"), "{errors:?}");
    let ok = load_ok("[listen]\nadmin = \"[::1]:7790\"\n", &[], &[]);
    assert!(ok.listen.admin.ip().is_loopback());
}

#[test]
fn a_store_cache_below_one_mib_is_refused_by_name() {
    let errors = load_err("[relay]\nstore_cache_bytes = 4096\n", &[], &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("relay.store_cache_bytes") && errors[0].contains("at least 1048576"),
        "{errors:?}"
    );
    let config = load_ok("", &[("RELAYBOX_RELAY_STORE_CACHE_BYTES", "2097152")], &[]);
    assert_eq!(config.relay.store_cache_bytes, 2 * 1024 * 1024);
}

#[test]
fn the_new_abuse_bounds_are_refused_by_name_when_they_cannot_work() {
    let errors = load_err(
        "[limits]\ncontact_lookups_per_hour_per_account = 100\n[keys]\nclaims_per_account_per_hour = 0\n[push]\nallowed_hosts = [\"http://ntfy.lan/up\", \"\"]\n",
        &[],
        &[],
    );
    let all = errors.join("\n");
    assert!(
        all.contains("limits.contact_lookups_per_hour_per_account")
            && all.contains("at least 5000"),
        "{all}"
    );
    assert!(all.contains("keys.claims_per_account_per_hour"), "{all}");
    assert_eq!(all.matches("push.allowed_hosts").count(), 2, "{all}");
    let config = load_ok(
        "[push]\nallowed_hosts = [\"ntfy.lan\", \"10.0.0.5\"]\n",
        &[],
        &[],
    );
    assert_eq!(config.push.allowed_hosts.len(), 2);
}
