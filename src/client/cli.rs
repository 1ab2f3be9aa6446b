//! `relaybox client …`: a terminal chat client over the SDK. Several clients can run on one
//! machine, each with its own `--home`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use tokio::io::AsyncBufReadExt;

use super::{Client, Event};
use crate::e2e::payload::Payload;
use crate::ids::MsgId;
use crate::wire::messages::{ChatState, ReceiptKind};

/// Relay address used when none is given or saved.
pub const DEFAULT_RELAY: &str = "127.0.0.1:7700";

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Directory holding this client's keys and state [default: the user's data directory].
    #[arg(long, env = "RELAYBOX_CLIENT_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Relay address (host:port); remembered for later commands.
    #[arg(long, env = "RELAYBOX_CLIENT_RELAY", global = true)]
    pub relay: Option<String>,
    /// Pin the relay's public key (hex) instead of trusting it on first contact.
    #[arg(long, global = true)]
    pub relay_key: Option<String>,
    #[command(subcommand)]
    pub cmd: ClientCmd,
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Ask the relay to send a verification code to a phone number.
    Register { phone: String },
    /// Prove the number with the code; this client becomes the account's primary device.
    Verify { phone: String, code: String },
    /// Send a text message (end-to-end encrypted to every device of the recipient).
    Send {
        to: String,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print incoming messages, receipts and chat states.
    Listen {
        /// Send read receipts for messages shown.
        #[arg(long)]
        read: bool,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Exit after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Chat with one person: type lines to send them; incoming messages are printed.
    Chat { peer: String },
    /// Show this device's account, devices, queued messages and published keys.
    Status,
    /// Send a read or played receipt for messages from `to`.
    Receipt {
        kind: ReceiptArg,
        to: String,
        #[arg(required = true, num_args = 1..)]
        msg_ids: Vec<String>,
    },
    /// Show `to` that you are composing, recording or paused.
    State { to: String, state: StateArg },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ReceiptArg {
    Read,
    Played,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StateArg {
    Composing,
    Recording,
    Paused,
}

fn default_home() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("relaybox-client")
}

/// Runs a client command; returns the process exit code.
pub fn run(args: ClientArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn run_async(args: ClientArgs) -> anyhow::Result<()> {
    let home = args.home.clone().unwrap_or_else(default_home);
    let mut client = Client::open(&home, args.relay.as_deref())?;
    if let Some(k) = &args.relay_key {
        let raw = hex::decode(k).context("--relay-key must be hex")?;
        let key = <[u8; 32]>::try_from(raw.as_slice())
            .map_err(|_| anyhow::anyhow!("--relay-key must be 32 bytes"))?;
        client.pin_relay_key(key);
    }
    match args.cmd {
        ClientCmd::Register { phone } => {
            let sent = client.register(&phone).await?;
            println!(
                "A code was sent to {} (valid {} s). Then run: relaybox client verify {} <code>",
                sent.phone,
                sent.expires_in_ms / 1000,
                sent.phone
            );
        }
        ClientCmd::Verify { phone, code } => {
            let v = client.verify(&phone, &code).await?;
            println!(
                "Registered {} as device {}. Keys published.",
                v.account, v.device
            );
        }
        ClientCmd::Send { to, text } => {
            let (msg_id, ack) = client.send_text(&to, &text.join(" ")).await?;
            println!("sent {msg_id} at {} ✓", ack.timestamp_ms);
        }
        ClientCmd::Listen {
            read,
            count,
            timeout,
            json,
        } => {
            let listen = listen(&mut client, read, count, json);
            match timeout {
                Some(s) => {
                    if tokio::time::timeout(Duration::from_secs(s), listen)
                        .await
                        .is_err()
                        && count.is_some()
                    {
                        anyhow::bail!(
                            "timed out after {s} s before {} messages arrived",
                            count.unwrap_or(0)
                        );
                    }
                }
                None => listen.await?,
            }
        }
        ClientCmd::Chat { peer } => chat(&mut client, &peer).await?,
        ClientCmd::Status => {
            let s = client.status().await?;
            println!("account:        {}", s.account);
            println!("device:         {}", s.device);
            println!("devices:        {:?}", s.devices);
            println!("queued for me:  {}", s.queued);
            println!("one-time keys:  {}", s.one_time_keys);
            println!("relay:          {}", client.state.relay);
            println!(
                "relay key:      {}",
                client.state.relay_key.map(hex::encode).unwrap_or_default()
            );
        }
        ClientCmd::Receipt { kind, to, msg_ids } => {
            let ids = msg_ids
                .iter()
                .map(|m| parse_msg_id(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let kind = match kind {
                ReceiptArg::Read => ReceiptKind::Read,
                ReceiptArg::Played => ReceiptKind::Played,
            };
            client.receipt(&to, kind, &ids).await?;
            println!("receipt sent");
        }
        ClientCmd::State { to, state } => {
            let state = match state {
                StateArg::Composing => ChatState::Composing,
                StateArg::Recording => ChatState::Recording,
                StateArg::Paused => ChatState::Paused,
            };
            client.chat_state(&to, state).await?;
        }
    }
    Ok(())
}

fn parse_msg_id(s: &str) -> anyhow::Result<MsgId> {
    let raw = hex::decode(s).with_context(|| format!("msg_id {s:?} is not hex"))?;
    MsgId::from_slice(&raw).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn listen(
    client: &mut Client,
    read: bool,
    count: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let mut shown = 0;
    let mut ticks = Ticks::default();
    loop {
        let event = client.next_event().await?;
        print_event(&event, json, &mut ticks);
        if let Event::Message { from, msg_id, .. } = &event {
            if read {
                client.receipt(from, ReceiptKind::Read, &[*msg_id]).await?;
            }
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
    }
}

/// The furthest receipt shown per message, so that a late DELIVERED after READ is not shown
/// as a step back (receipts travel separately and may overtake each other).
#[derive(Default)]
struct Ticks(std::collections::HashMap<MsgId, i32>);

impl Ticks {
    /// Keeps only the message ids whose receipt is an upgrade.
    fn upgrades(&mut self, kind: ReceiptKind, ids: &[MsgId]) -> Vec<MsgId> {
        let rank = kind as i32;
        ids.iter()
            .filter(|id| {
                let seen = self.0.entry(**id).or_insert(0);
                let up = rank > *seen;
                *seen = (*seen).max(rank);
                up
            })
            .copied()
            .collect()
    }
}

fn print_event(event: &Event, json: bool, ticks: &mut Ticks) {
    if json {
        let v = match event {
            Event::Message {
                from,
                from_device,
                msg_id,
                timestamp_ms,
                inner,
            } => serde_json::json!({
                "event": "message", "from": from, "from_device": from_device, "msg_id": msg_id.to_string(),
                "timestamp_ms": timestamp_ms, "payload": inner.payload,
            }),
            Event::Undecryptable {
                from,
                from_device,
                msg_id,
                error,
            } => serde_json::json!({
                "event": "undecryptable", "from": from, "from_device": from_device, "msg_id": msg_id.to_string(), "error": error,
            }),
            Event::Receipt {
                from,
                kind,
                msg_ids,
            } => serde_json::json!({
                "event": "receipt", "from": from, "kind": kind.as_str_name(),
                "msg_ids": msg_ids.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            }),
            Event::ChatState { from, state } => serde_json::json!({
                "event": "chat_state", "from": from, "state": state.as_str_name(),
            }),
        };
        println!("{v}");
        return;
    }
    match event {
        Event::Message {
            from,
            msg_id,
            inner,
            ..
        } => match &inner.payload {
            Payload::Text { body } => println!("[{from}] {body}    ({msg_id})"),
            #[allow(unreachable_patterns)]
            other => println!("[{from}] {other:?}    ({msg_id})"),
        },
        Event::Undecryptable {
            from,
            msg_id,
            error,
            ..
        } => {
            println!("[{from}] (a message that could not be decrypted: {error})    ({msg_id})")
        }
        Event::Receipt {
            from,
            kind,
            msg_ids,
        } => {
            let msg_ids = ticks.upgrades(*kind, msg_ids);
            let mark = match kind {
                ReceiptKind::Delivered => "✓✓ delivered to",
                ReceiptKind::Read => "✓✓ read by",
                ReceiptKind::Played => "✓✓ played by",
                ReceiptKind::Unspecified => "receipt from",
            };
            for m in &msg_ids {
                println!("  {mark} {from}: {m}");
            }
        }
        Event::ChatState { from, state } => {
            let what = match state {
                ChatState::Composing => "is typing…",
                ChatState::Recording => "is recording audio…",
                ChatState::Paused | ChatState::Unspecified => "stopped typing",
            };
            println!("  {from} {what}");
        }
    }
}

/// Interactive chat: lines typed are sent to `peer`; everything that arrives is printed.
async fn chat(client: &mut Client, peer: &str) -> anyhow::Result<()> {
    let account = client.state.account()?.to_owned();
    println!("Chatting as {account} with {peer}. Type a message and press Enter; Ctrl-D to quit.");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    client.conn().await?;
    let mut ticks = Ticks::default();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                let text = line.trim();
                if text.is_empty() { continue; }
                match client.send_text(peer, text).await {
                    Ok((msg_id, _)) => println!("  ✓ sent {msg_id}"),
                    Err(e) => println!("  ✗ not sent: {e:#}"),
                }
            }
            event = client.next_event() => {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        println!("  (connection lost: {e:#}; reconnecting…)");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                print_event(&event, false, &mut ticks);
                if let Event::Message { from, msg_id, .. } = &event {
                    if from == peer {
                        client.receipt(from, ReceiptKind::Read, &[*msg_id]).await?;
                    }
                }
            }
        }
    }
}
