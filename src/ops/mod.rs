//! Operator commands: `relaybox admin …` (a thin client over the admin API),
//! `relaybox backup` (online, through the API) and `relaybox restore` (offline).
//!
//! Exit codes: 0 ok; 1 the API or the restore refused, with its message; 64 bad usage (a
//! missing token file, a bad URL or argument); 69 (`EX_UNAVAILABLE`) the relay is not
//! running (nothing answers at the admin address).

pub mod abuse;
pub mod admin;
mod api;
pub mod backup;
pub mod entities;
pub mod manuals;
pub mod mqtt;

use std::path::PathBuf;

use clap::Args;

/// Exit code when the relay does not answer (`EX_UNAVAILABLE` from `sysexits.h`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for bad usage (`EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// How to reach the admin API; shared by `admin` and `backup`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Admin API base URL [default: http:// + listen.admin from the config].
    #[arg(long = "admin", value_name = "URL")]
    pub admin_url: Option<String>,
    /// File holding the bearer token [default: $RELAYBOX_ADMIN_TOKEN, else <data_dir>/admin.token].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Data directory, where the token is read from (overrides relay.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// A command's failure and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub fn api(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Prints a failure and returns its exit code.
pub fn report(result: Result<(), Failure>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (scripts, tests).
pub fn progress_bar(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{msg} {spinner} {bytes} ({bytes_per_sec})"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
