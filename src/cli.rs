//! The `relaybox` command line: `serve`, `check-config`, `print-config`, `keygen`, `admin …`,
//! `backup`, `restore`, `client …`, `bench …`, `completions`, `manpage`.
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (clap), 64 bad configuration (and
//! bad usage of the operator commands, see `ops`), 69 relay not running (`admin`, `backup`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Sources, EXIT_BAD_CONFIG};

#[derive(Parser, Debug)]
#[command(
    name = "relaybox",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        "\nweb client bundle sha256 ",
        env!("WEB_BUNDLE_SHA256")
    ),
    about = "An on-premise, end-to-end encrypted messaging relay."
)]
pub struct Cli {
    /// Config file (TOML). Without it the embedded defaults apply.
    #[arg(long, global = true, env = "RELAYBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override one config key, e.g. `--set listen.tcp=0.0.0.0:7700` (repeatable).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the relay.
    Serve {
        /// Listen address for Noise/TCP clients (overrides listen.tcp).
        #[arg(long)]
        listen_tcp: Option<String>,
        /// Listen address for WebSocket and chunked-HTTP clients (overrides listen.http).
        #[arg(long)]
        listen_http: Option<String>,
        /// Data directory (overrides relay.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate the configuration and exit (64 if it is bad).
    CheckConfig,
    /// Print the commented default configuration.
    PrintConfig,
    /// Generate the relay's static key in the data directory and print its public half.
    Keygen {
        /// Replace an existing key (clients that pinned the old key must re-pin).
        #[arg(long)]
        force: bool,
    },
    /// Provision MQTT devices on a stopped relay's data directory.
    MqttDevice(crate::edge::mqtt::offline::MqttDeviceArgs),
    /// Operate a running relay through its admin API (loopback, bearer token).
    Admin(crate::ops::admin::AdminArgs),
    /// Write a consistent online backup of a running relay (store, key, blobs) to a file.
    Backup {
        /// Where to write the archive (a tar file).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        api: crate::ops::ApiArgs,
    },
    /// Restore a backup into a new or empty data directory (the relay must not be running).
    Restore {
        /// The archive written by `relaybox backup`.
        file: PathBuf,
        /// Data directory to restore into (overrides relay.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// A terminal client.
    Client(crate::client::cli::ClientArgs),
    /// Measure throughput, latency and footprint (of relaybox, or of an MQTT/NATS peer).
    Bench(crate::bench::BenchArgs),
    /// Print a shell completion script, e.g. `relaybox completions bash > /etc/bash_completion.d/relaybox`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: crate::ops::manuals::Shell,
    },
    /// Write man pages (relaybox.1 and one per subcommand) into a directory.
    Manpage {
        /// Where to write the pages; created if missing.
        dir: PathBuf,
    },
}

/// Parses the command line and runs it; returns the process exit code.
pub fn run() -> i32 {
    // Everything relaybox writes (sled's files included, which it creates itself) is the
    // relay's user's alone: the data directory holds keys, tokens and queued ciphertext.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.cmd {
        Cmd::Admin(args) => match load(&cli.config, &cli.set, &[]) {
            Ok(cfg) => crate::ops::report(crate::ops::admin::run(args, &cfg)),
            Err(code) => code,
        },
        Cmd::Backup { out, api } => match load(&cli.config, &cli.set, &[]) {
            Ok(cfg) => crate::ops::report(crate::ops::backup::backup(&api, &cfg, &out)),
            Err(code) => code,
        },
        Cmd::Restore { file, data_dir } => match load(&cli.config, &cli.set, &[]) {
            Ok(cfg) => crate::ops::report(crate::ops::backup::restore(
                &file,
                data_dir.as_deref(),
                &cfg,
            )),
            Err(code) => code,
        },
        Cmd::PrintConfig => {
            print!("{}", config::DEFAULT_TOML);
            0
        }
        Cmd::Client(args) => crate::client::cli::run(args),
        Cmd::Bench(args) => crate::bench::run(args),
        Cmd::Completions { shell } => {
            crate::ops::manuals::completions(
                <Cli as clap::CommandFactory>::command(),
                shell,
                &mut std::io::stdout(),
            );
            0
        }
        Cmd::Manpage { dir } => {
            match crate::ops::manuals::manpages(<Cli as clap::CommandFactory>::command(), &dir) {
                Ok(pages) => {
                    println!("wrote {} man pages to {}", pages.len(), dir.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Cmd::CheckConfig => match load(&cli.config, &cli.set, &[]) {
            Ok(_) => {
                println!("configuration ok");
                0
            }
            Err(code) => code,
        },
        Cmd::MqttDevice(args) => match load(&cli.config, &cli.set, &[]) {
            Ok(cfg) => crate::edge::mqtt::offline::run(&cfg, args),
            Err(code) => code,
        },
        Cmd::Keygen { force } => match load(&cli.config, &cli.set, &[]) {
            Ok(cfg) => keygen(&cfg, force),
            Err(code) => code,
        },
        Cmd::Serve {
            listen_tcp,
            listen_http,
            data_dir,
        } => {
            let mut flags = Vec::new();
            if let Some(a) = listen_tcp {
                flags.push(("listen.tcp".to_owned(), a));
            }
            if let Some(a) = listen_http {
                flags.push(("listen.http".to_owned(), a));
            }
            if let Some(d) = data_dir {
                flags.push(("relay.data_dir".to_owned(), d.display().to_string()));
            }
            let cfg = match load(&cli.config, &cli.set, &flags) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            crate::telemetry::init(
                &cfg.log.level,
                cfg.log.format == crate::config::LogFormat::Json,
            );
            let system = actix_rt::System::new();
            match system.block_on(crate::app::serve(cfg)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "Relay failed.");
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    }
}

/// Prints a command-line error. The operator commands promise `EX_USAGE` (64) for bad
/// usage, as scripts around them expect; the others keep clap's 2.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return 0;
    }
    // The first argument that names a subcommand is the command (global flags may come
    // first, with values that are not subcommand names).
    let names: Vec<String> = <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let operator = std::env::args()
        .skip(1)
        .find(|a| names.contains(a))
        .is_some_and(|a| matches!(a.as_str(), "admin" | "backup" | "restore"));
    if operator {
        crate::ops::EXIT_USAGE
    } else {
        e.exit_code()
    }
}

/// Loads the config from every layer; prints every error and returns exit code 64 if bad.
fn load(file: &Option<PathBuf>, set: &[String], flags: &[(String, String)]) -> Result<Config, i32> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RELAYBOX_"))
        .collect();
    let mut overrides = Vec::new();
    for s in set {
        match s.split_once('=') {
            Some((k, v)) => overrides.push((k.trim().to_owned(), v.to_owned())),
            None => {
                eprintln!("error: --set {s:?}: expected SECTION.KEY=VALUE");
                return Err(EXIT_BAD_CONFIG);
            }
        }
    }
    overrides.extend(flags.iter().cloned());
    let sources = Sources {
        file: file.as_deref(),
        env: &env,
        overrides: &overrides,
    };
    config::load(&sources).map_err(|errors| {
        eprintln!("error: bad configuration:\n{errors}");
        EXIT_BAD_CONFIG
    })
}

fn keygen(cfg: &Config, force: bool) -> i32 {
    let path = cfg.relay.data_dir.join(crate::files::RELAY_KEY_FILE);
    if path.exists() && !force {
        eprintln!(
            "error: {} exists; pass --force to replace it (clients must then re-pin)",
            path.display()
        );
        return 1;
    }
    let key = crate::wire::handshake::StaticKeypair::generate();
    let written = crate::files::create_private_dir(&cfg.relay.data_dir)
        .and_then(|()| crate::files::write_key(&path, &key));
    match written {
        Ok(()) => {
            println!("{}", hex::encode(key.public));
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
