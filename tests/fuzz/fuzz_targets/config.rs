//! Config parsing: arbitrary TOML text, and arbitrary `--set` overrides on top of the defaults.
//! Every input ends in a config or a list of errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::load_str(text, &[], &[]);
    // The same text as one `--set key=value` and as an environment variable's value.
    if let Ok((key, value)) = config::parse_override(text) {
        let _ = config::load_str("", &[], &[(key, value.clone())]);
        let _ = config::load_str(
            "",
            &[("RELAYBOX_LIMITS_MAX_CONNECTIONS".into(), value)],
            &[],
        );
    }
});
