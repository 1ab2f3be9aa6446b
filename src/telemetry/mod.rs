//! Logging through `tracing`: human-readable text or JSON on stderr (journald captures stderr
//! under systemd). Messages are capitalised sentences with key/value fields; message content
//! is never logged because the relay never has it. `metrics` holds the Prometheus metrics.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, if set, overrides the configured level.
pub fn init(level: &str, json: bool) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // actix-server narrates its worker start and stop at info; the relay logs what matters
    // ("Relay ready.", "Relay stopped.") itself. Its warnings and errors still show.
    if !level.contains("actix_server") {
        if let Ok(quiet) = "actix_server=warn".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only for a person at a terminal, never in files or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests running in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
