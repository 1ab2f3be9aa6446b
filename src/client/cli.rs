//! `relaybox client …`: a terminal chat client over the SDK. Several clients can run on one
//! machine, each with its own `--home`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use tokio::io::AsyncBufReadExt;

use super::settings::MuteFor;
use super::transport::TransportKind;
use super::{Client, Event};
use crate::e2e::payload::Payload;
use crate::ids::MsgId;
use crate::wire::messages::{ChatState, EntityEventKind, GroupOp, PresencePrivacy, ReceiptKind};

/// Relay address used when none is given or saved.
pub const DEFAULT_RELAY: &str = "127.0.0.1:7700";

/// Shown wherever a client lists or messages a bridged MQTT device (DESIGN.md §1, §9).
pub const BRIDGED_NOTE: &str = " (bridged: the relay can read messages to and from this device)";

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
    /// How to reach the relay: tcp (to --relay), ws or http (to --http; http falls back to
    /// split mode when a proxy buffers request bodies), http-split, or auto (TCP, then
    /// WebSocket, then HTTP); remembered for later commands [default: tcp].
    #[arg(long, value_enum, env = "RELAYBOX_CLIENT_TRANSPORT", global = true)]
    pub transport: Option<TransportKind>,
    /// The relay's HTTP listener, e.g. http://relay.example:7780 or https://…; remembered.
    #[arg(long, env = "RELAYBOX_CLIENT_HTTP", global = true)]
    pub http: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// relay, besides the public roots;
    /// remembered.
    #[arg(long, env = "RELAYBOX_CLIENT_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ClientCmd,
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Ask the relay to send a verification code to a phone number.
    Register { phone: String },
    /// Prove the number with the code; this client becomes the account's primary device.
    Verify { phone: String, code: String },
    /// Send a text message or an image (end-to-end encrypted to every device of the
    /// recipient). An image goes as a progressive blob: thumbnail first, then larger tiers.
    Send {
        /// Who gets it: a phone number (+14155550101), a business entity or bridged device
        /// (@acme-branch-12, @fridge-3), or a group id (g…, from `group list`).
        #[arg(value_name = "TO")]
        to: String,
        /// Answer `to` (a customer) as this business entity, e.g. @acme-branch-12.
        #[arg(long = "as", value_name = "ENTITY")]
        as_entity: Option<String>,
        /// A JPEG or PNG file to send.
        #[arg(long)]
        image: Option<PathBuf>,
        /// The message; several words are joined with spaces (quote it to keep spacing).
        #[arg(value_name = "TEXT", required_unless_present = "image", num_args = 0..)]
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
    /// Chat with a person, a business entity or a group: type lines to send them; incoming
    /// messages are printed.
    Chat {
        /// A phone number, an @handle, or a group id (g…).
        #[arg(value_name = "CONVERSATION")]
        peer: String,
    },
    /// Show this device's account, devices, queued messages and published keys.
    Status,
    /// Send a read or played receipt for messages from `to`.
    Receipt {
        kind: ReceiptArg,
        /// The account that sent the messages (also in a group).
        to: String,
        #[arg(required = true, num_args = 1..)]
        msg_ids: Vec<String>,
    },
    /// Show `to` that you are composing, recording or paused.
    State {
        /// A phone number, an @handle, or a group id (g…).
        to: String,
        state: StateArg,
    },
    /// Groups: create, add, remove, promote, leave, subject, info, send, list.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Business entities (administrator and agents): threads, assign, release, close,
    /// reply, agents.
    #[command(subcommand)]
    Entity(super::entity_cli::EntityCmd),
    /// On a new companion (its own --home): show a pairing code and wait to be linked.
    Pair {
        /// Seconds to wait for the primary to link this device.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// On the primary: link the companion that shows this pairing code, and send it history.
    Link { code: String },
    /// On the primary: remove a linked companion.
    Unlink { device: u32 },
    /// List an account's devices (default: your own).
    Devices { account: Option<String> },
    /// Upload your contact list (replaces it); shows which numbers use relaybox.
    Contacts {
        #[arg(required = true, num_args = 1..)]
        numbers: Vec<String>,
    },
    /// Who may see when you are online: everyone (who has you), contacts (mutual), nobody.
    Privacy { who: PrivacyArg },
    /// Mute a conversation (a phone number or a group id).
    Mute {
        thread: String,
        /// For this long, e.g. 8h or 2d [default: groups in proportion to their size, 1:1 forever].
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        #[arg(long, conflicts_with = "duration")]
        forever: bool,
    },
    /// Unmute a conversation.
    Unmute { thread: String },
    /// Block an account: its messages, receipts and typing no longer reach you, and it no
    /// longer sees when you are online. It is not told.
    Block { account: String },
    /// Unblock an account.
    Unblock { account: String },
    /// The accounts you have blocked.
    Blocked,
    /// Show the safety number with someone, to compare with the one their app shows (read it
    /// aloud, or scan the QR code). It covers the identity keys of every device of you both.
    VerifyContact {
        account: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Accept the new identity key of someone whose safety number changed, after comparing
    /// safety numbers; opens the messages held from them meanwhile.
    AcceptKey { account: String },
    /// Register the URL the relay POSTs to when messages wait while you are offline
    /// (e.g. an ntfy topic); `--off` removes it.
    Push {
        #[arg(required_unless_present = "off")]
        url: Option<String>,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group with you as admin.
    Create {
        subject: String,
        #[arg(num_args = 0..)]
        members: Vec<String>,
    },
    /// Add members (admins only).
    Add {
        group: String,
        #[arg(required = true, num_args = 1..)]
        accounts: Vec<String>,
    },
    /// Remove members (admins only).
    Remove {
        group: String,
        #[arg(required = true, num_args = 1..)]
        accounts: Vec<String>,
    },
    /// Make members admins (admins only).
    Promote {
        group: String,
        #[arg(required = true, num_args = 1..)]
        accounts: Vec<String>,
    },
    /// Leave a group.
    Leave { group: String },
    /// Change the subject (admins only).
    Subject { group: String, subject: String },
    /// Show members, admins and devices.
    Info { group: String },
    /// Send a text to the group.
    Send {
        group: String,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// The groups this client knows.
    List,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PrivacyArg {
    Everyone,
    Contacts,
    Nobody,
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
    let mut client = open_client(&args)?;
    let cmd = match args.cmd {
        ClientCmd::Group(g) => return group(&mut client, g).await,
        ClientCmd::Entity(e) => return super::entity_cli::run(&mut client, e).await,
        cmd => cmd,
    };
    let Some(cmd) = messaging(&mut client, cmd).await? else {
        return Ok(());
    };
    match account(&mut client, cmd).await? {
        None => Ok(()),
        Some(cmd) => anyhow::bail!("no handler for {cmd:?}"),
    }
}

/// The client in `--home`, with what the global flags set (relay key, CA, transport).
fn open_client(args: &ClientArgs) -> anyhow::Result<Client> {
    let home = args.home.clone().unwrap_or_else(default_home);
    let mut client = Client::open(&home, args.relay.as_deref())?;
    if let Some(k) = &args.relay_key {
        let raw = hex::decode(k).context("--relay-key must be hex")?;
        let key = <[u8; 32]>::try_from(raw.as_slice())
            .map_err(|_| anyhow::anyhow!("--relay-key must be 32 bytes"))?;
        client.pin_relay_key(key);
    }
    if let Some(ca) = &args.ca {
        anyhow::ensure!(ca.is_file(), "--ca {}: no such file", ca.display());
        client.state.ca = Some(ca.clone());
    }
    if args.transport.is_some() || args.http.is_some() {
        let kind = args.transport.unwrap_or(client.state.transport);
        client.use_transport(kind, args.http.as_deref());
    }
    if matches!(
        client.state.transport,
        TransportKind::Ws | TransportKind::Http | TransportKind::HttpSplit
    ) && client.state.http.is_none()
    {
        anyhow::bail!(
            "--transport {} needs the relay's HTTP URL: add --http http://HOST:PORT",
            client.state.transport.as_str()
        );
    }
    Ok(client)
}

/// Registration and messaging: register, verify, send, listen, chat, status, receipts, chat
/// states. Answers any other command back.
async fn messaging(client: &mut Client, cmd: ClientCmd) -> anyhow::Result<Option<ClientCmd>> {
    match cmd {
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
        ClientCmd::Send {
            to,
            as_entity: Some(entity),
            text,
            ..
        } => {
            let (msg_id, ack) = client
                .reply_as_entity(&entity, &to, &text.join(" "))
                .await?;
            println!("sent {msg_id} as {entity} at {} ✓", ack.timestamp_ms);
        }
        ClientCmd::Send {
            to, image, text, ..
        } if crate::ids::is_group_id(&to) => {
            if image.is_some() {
                anyhow::bail!(
                    "--image goes to one person or entity; to a group, send text (relaybox client send {to} \"…\")"
                );
            }
            let (msg_id, ack) = client.send_group_text(&to, &text.join(" ")).await?;
            println!("sent {msg_id} to group {to} at {} ✓", ack.timestamp_ms);
        }
        ClientCmd::Send { to, text, .. }
            if !text.is_empty()
                && client
                    .devices(&to)
                    .await
                    .is_ok_and(|d| !d.recipients.is_empty()) =>
        {
            // A business entity: the relay routes the thread to its administrator or agent.
            let (msg_id, ack) = client.send_to_entity(&to, &text.join(" ")).await?;
            println!("sent {msg_id} to {to} at {} ✓", ack.timestamp_ms);
        }
        ClientCmd::Send {
            to, image, text, ..
        } => {
            if let Some(file) = image {
                let (msg_id, ack, media) = client.send_image(&to, &file).await?;
                println!(
                    "sent image {msg_id} at {} ✓ ({} segments, blob {})",
                    ack.timestamp_ms,
                    media.segments.len(),
                    media.blob
                );
            }
            if !text.is_empty() {
                let (msg_id, ack) = client.send_text(&to, &text.join(" ")).await?;
                println!("sent {msg_id} at {} ✓", ack.timestamp_ms);
            }
            if to.starts_with('@') && client.devices(&to).await?.bridged {
                println!("{}", BRIDGED_NOTE.trim_start());
            }
        }
        ClientCmd::Listen {
            read,
            count,
            timeout,
            json,
        } => {
            let listen = listen(client, read, count, json);
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
        ClientCmd::Chat { peer } => chat(client, &peer).await?,
        ClientCmd::Status => {
            let s = client.status().await?;
            println!("account:        {}", s.account);
            println!("device:         {}", s.device);
            println!("devices:        {:?}", s.devices);
            println!("queued for me:  {}", s.queued);
            println!("one-time keys:  {}", s.one_time_keys);
            println!("relay:          {}", client.state.relay);
            println!(
                "http:           {}",
                client.state.http.as_deref().unwrap_or("")
            );
            println!("transport:      {}", client.state.transport.as_str());
            println!(
                "relay key:      {}",
                client.state.relay_key.map(hex::encode).unwrap_or_default()
            );
        }
        ClientCmd::Receipt { kind, to, msg_ids } => {
            if crate::ids::is_group_id(&to) {
                anyhow::bail!(
                    "a receipt goes to the account that sent the messages (the `from` that `listen` shows), not to the group {to}"
                );
            }
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
            if crate::ids::is_group_id(&to) {
                client.group_chat_state(&to, state).await?;
            } else {
                client.chat_state(&to, state).await?;
            }
            // A chat state gets no answer. One request's answer before exiting shows the
            // relay read it: exiting at once could close the socket with the relay's own
            // frames unread, and the reset that sends can drop the frame on the relay's side.
            client.status().await?;
        }
        other => return Ok(Some(other)),
    }
    Ok(None)
}

/// The account's devices, contacts, privacy, mutes, blocks, push endpoint and trust in its
/// correspondents' keys. Answers any other command back.
async fn account(client: &mut Client, cmd: ClientCmd) -> anyhow::Result<Option<ClientCmd>> {
    match cmd {
        ClientCmd::Pair { wait } => {
            let code = client.pairing_code()?;
            println!("Pairing code (show it to your primary device):\n\n    {code}\n");
            println!("On the primary run: relaybox client link {code}");
            println!("Waiting up to {wait} s to be linked…");
            let (account, device) = client.await_link(Duration::from_secs(wait)).await?;
            println!("Linked to {account} as device {device}. Keys published.");
            println!("Run `relaybox client listen` to receive history and new messages.");
        }
        ClientCmd::Link { code } => {
            let (device, sent) = client.link(&code).await?;
            println!(
                "Linked device {device}; sent {sent} history messages to it, end-to-end encrypted."
            );
        }
        ClientCmd::Unlink { device } => {
            client.unlink(device).await?;
            println!("Device {device} unlinked; its keys and queue are gone.");
        }
        ClientCmd::Devices { account } => {
            let account = match account {
                Some(a) => a,
                None => client.state.account()?.to_owned(),
            };
            let d = client.devices(&account).await?;
            println!(
                "{}: devices {:?}{}",
                d.account,
                d.devices,
                if d.bridged { BRIDGED_NOTE } else { "" }
            );
        }
        ClientCmd::Contacts { numbers } => {
            let r = client.upload_contacts(&numbers).await?;
            println!(
                "On relaybox: {}",
                if r.registered.is_empty() {
                    "nobody yet".into()
                } else {
                    r.registered.join(", ")
                }
            );
            if !r.invalid.is_empty() {
                println!("Not phone numbers: {}", r.invalid.join(", "));
            }
        }
        ClientCmd::Privacy { who } => {
            let p = match who {
                PrivacyArg::Everyone => PresencePrivacy::Everyone,
                PrivacyArg::Contacts => PresencePrivacy::Contacts,
                PrivacyArg::Nobody => PresencePrivacy::Nobody,
            };
            client.set_privacy(p).await?;
            println!("Presence visible to: {who:?}");
        }
        ClientCmd::Mute {
            thread,
            duration,
            forever,
        } => {
            let how = match (duration, forever) {
                (_, true) => MuteFor::Forever,
                (Some(d), _) => MuteFor::Until(
                    crate::clock::now_ms()
                        .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                ),
                (None, false) => MuteFor::Default,
            };
            let m = client.mute(&thread, how).await?;
            if m.forever {
                println!("Muted {} until you unmute it.", m.thread);
            } else {
                let left = (m.until_ms.saturating_sub(crate::clock::now_ms()) + 500) / 1000;
                println!(
                    "Muted {} for {}.",
                    m.thread,
                    humantime::format_duration(Duration::from_secs(left))
                );
            }
        }
        ClientCmd::Unmute { thread } => {
            client.unmute(&thread).await?;
            println!("Unmuted {thread}.");
        }
        ClientCmd::Block { account } => {
            client.block(&account, true).await?;
            println!("Blocked {account}.");
        }
        ClientCmd::Unblock { account } => {
            client.block(&account, false).await?;
            println!("Unblocked {account}.");
        }
        ClientCmd::VerifyContact { account, json } => {
            let v = client.verify_contact(&account).await?;
            print_verification(&account, &v, json)?;
        }
        ClientCmd::AcceptKey { account } => {
            let opened = client.accept_key(&account)?;
            println!(
                "Accepted the new key of {account}; {} held message(s) opened.",
                opened.len()
            );
            let mut ticks = Ticks::default();
            for event in &opened {
                print_event(event, false, &mut ticks);
            }
        }
        ClientCmd::Blocked => {
            let list = client.blocked().await?;
            if list.is_empty() {
                println!("You have blocked nobody.");
            }
            for a in list {
                println!("{a}");
            }
        }
        ClientCmd::Push { url, off } => {
            let url = if off { None } else { url };
            client.register_push(url.as_deref()).await?;
            println!(
                "{}",
                if url.is_some() {
                    "Push endpoint registered."
                } else {
                    "Push endpoint removed."
                }
            );
        }
        other => return Ok(Some(other)),
    }
    Ok(None)
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
        follow_up(client, &event, json).await;
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

/// What a message asks of the client after it is shown: fetch media (thumbnail first, then
/// the full image; a gone blob is recalled), or answer a recall of media this device sent.
async fn follow_up(client: &mut Client, event: &Event, json: bool) {
    let Event::Message {
        from,
        msg_id,
        inner,
        ..
    } = event
    else {
        return;
    };
    match &inner.payload {
        Payload::Media(media) => {
            let name = media
                .resend_of
                .clone()
                .unwrap_or_else(|| msg_id.to_string());
            let last = media.segments.len().saturating_sub(1);
            let stages: Vec<usize> = if last == 0 { vec![0] } else { vec![0, last] };
            for n in stages {
                let stage = if n == last { "full" } else { "thumbnail" };
                match client.fetch_segment(&name, media, n).await {
                    Ok(path) => {
                        let seg = &media.segments[n];
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"event": "media", "stage": stage, "from": from, "msg_id": name, "path": path, "width": seg.width, "height": seg.height, "mime": seg.mime})
                            );
                        } else {
                            let what = if stage == "full" {
                                "image"
                            } else {
                                "thumbnail"
                            };
                            println!(
                                "  🖼 {what} received from {from}: {} ({}x{})",
                                path.display(),
                                seg.width,
                                seg.height
                            );
                        }
                    }
                    Err(e) if e.downcast_ref::<super::media::BlobGone>().is_some() => {
                        let recalled = client.recall(from, &name).await;
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"event": "media_gone", "from": from, "msg_id": name, "recalled": recalled.is_ok()})
                            );
                        } else {
                            match recalled {
                                Ok(()) => println!("  ↻ the media of {name} is gone from the relay; asked {from} to send it again"),
                                Err(e) => println!("  ✗ the media of {name} is gone and the recall failed: {e:#}"),
                            }
                        }
                        return;
                    }
                    Err(e) => {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"event": "media_error", "from": from, "msg_id": name, "error": format!("{e:#}")})
                            );
                        } else {
                            println!("  ✗ could not fetch the {stage} of {name}: {e:#}");
                        }
                        return;
                    }
                }
            }
        }
        Payload::Recall { msg_id: recalled } => {
            let answer = client.answer_recall(from, recalled).await;
            if json {
                let (resent, error) = match &answer {
                    Ok(id) => (id.map(|m| m.to_string()), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                };
                println!(
                    "{}",
                    serde_json::json!({"event": "recall_answered", "from": from, "msg_id": recalled, "resent_as": resent, "error": error})
                );
            } else {
                match answer {
                    Ok(Some(id)) => {
                        println!("  ↻ {from} asked for {recalled} again; sent it as {id}")
                    }
                    Ok(None) => println!(
                        "  ↻ {from} asked for {recalled} again, but this device does not have it"
                    ),
                    Err(e) => println!("  ✗ could not send {recalled} again: {e:#}"),
                }
            }
        }
        _ => {}
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

/// The safety number as digits and a QR code, each device's key and whether it changed.
fn print_verification(
    account: &str,
    v: &super::trust::Verification,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "account": account,
            "safety_number": v.number.digits(),
            "qr": v.number.qr_payload(),
            "changed": v.changed(),
            "devices": v.devices,
        });
        println!("{out}");
        return Ok(());
    }
    use qrcode::render::unicode::Dense1x2;
    let qr = qrcode::QrCode::new(v.number.qr_payload().as_bytes())
        .context("drawing the safety number as a QR code")?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    println!("Safety number with {account}:\n");
    for line in v.number.grouped().lines() {
        println!("    {line}");
    }
    println!("\n{qr}\n");
    println!("Compare it with the number {account} sees (in person, or on a call you trust).");
    println!(
        "The same number means your messages are encrypted to their devices and no one else's."
    );
    println!("\nDevices:");
    for d in &v.devices {
        println!(
            "  {} device {}: {}…  {}",
            d.account,
            d.device,
            &d.identity_key[..16],
            d.status
        );
    }
    for d in v.devices.iter().filter(|d| d.status == "changed") {
        eprintln!(
            "warning: {}",
            super::trust::key_changed_warning(&d.account, d.device)
        );
    }
    Ok(())
}

fn print_event(event: &Event, json: bool, ticks: &mut Ticks) {
    if json {
        println!("{}", event_json(event));
        return;
    }
    match event {
        Event::Message {
            from,
            msg_id,
            inner,
            group,
            muted,
            entity,
            ..
        } => {
            let bell = if *muted { " 🔕" } else { "" };
            let place = group.as_ref().map(|g| format!("{g} ")).unwrap_or_default();
            // An entity's answer shows the entity and the agent; a customer's message to staff
            // shows the entity it was for.
            let from = match entity {
                Some(v) if v.agent.is_some() => format!("{from} ({})", v.attribution),
                Some(v) => format!("{} ← {from}", v.entity),
                None => from.clone(),
            };
            match &inner.payload {
                Payload::Text { body } => println!("[{place}{from}]{bell} {body}    ({msg_id})"),
                Payload::Media(m) => {
                    let full = m.segments.last();
                    let (w, h) = full.map(|s| (s.width, s.height)).unwrap_or_default();
                    let again = m
                        .resend_of
                        .as_ref()
                        .map(|o| format!(", sent again for {o}"))
                        .unwrap_or_default();
                    println!(
                        "[{place}{from}]{bell} 🖼 image {w}x{h} ({} segments{again})    ({msg_id})",
                        m.segments.len()
                    )
                }
                Payload::Recall { msg_id: recalled } => {
                    println!("[{place}{from}] asks for the media of {recalled} again    ({msg_id})")
                }
                other => println!("[{place}{from}]{bell} {other:?}    ({msg_id})"),
            }
        }
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
        Event::ChatState { from, state, group } => {
            let what = match state {
                ChatState::Composing => "is typing…",
                ChatState::Recording => "is recording audio…",
                ChatState::Paused | ChatState::Unspecified => "stopped typing",
            };
            let place = group
                .as_ref()
                .map(|g| format!(" in {g}"))
                .unwrap_or_default();
            println!("  {from} {what}{place}");
        }
        Event::Group {
            group,
            actor,
            op,
            accounts,
            subject,
        } => {
            let what = match op {
                GroupOp::Create => format!("created \"{subject}\" with {}", accounts.join(", ")),
                GroupOp::Add => format!("added {}", accounts.join(", ")),
                GroupOp::Remove => format!("removed {}", accounts.join(", ")),
                GroupOp::Leave => "left".to_owned(),
                GroupOp::Promote => format!("made {} admin", accounts.join(", ")),
                GroupOp::SetSubject => format!("changed the subject to \"{subject}\""),
                GroupOp::Unspecified => "changed the group".to_owned(),
            };
            println!("  * {group}: {actor} {what}");
        }
        Event::DevicesChanged { account, devices } => {
            println!("  * {account} now has devices {devices:?}")
        }
        Event::KeyChanged { account, device } => {
            println!(
                "  ⚠ {}",
                super::trust::key_changed_warning(account, *device)
            )
        }
        Event::Presence {
            account,
            available,
            last_seen_ms,
        } => {
            if *available {
                println!("  ● {account} is online");
            } else {
                println!("  ○ {account} was last seen {}", ago(*last_seen_ms));
            }
        }
        Event::History { entries, .. } => {
            println!("  * received {entries} messages of history from your primary device")
        }
        Event::Handover {
            entity,
            customer,
            from,
            entries,
        } => println!(
            "  * {entity}: {from} assigned you {customer}'s thread ({entries} messages of history)"
        ),
        Event::EntityRouting {
            entity,
            customer,
            kind,
            agent,
            actor,
        } => {
            let what = match kind {
                EntityEventKind::Assigned => format!("assigned to {agent}"),
                EntityEventKind::Released => "back with the administrator".to_owned(),
                EntityEventKind::Closed => "closed".to_owned(),
                EntityEventKind::AgentRemoved => {
                    format!("back with the administrator ({agent} was removed)")
                }
                EntityEventKind::Unspecified => "changed".to_owned(),
            };
            let by = if actor.is_empty() {
                "?"
            } else {
                actor.as_str()
            };
            println!("  * {entity}: {customer}'s thread is {what} (by {by})")
        }
    }
}

fn ago(at_ms: u64) -> String {
    if at_ms == 0 {
        return "never".into();
    }
    let secs = crate::clock::now_ms().saturating_sub(at_ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Message {
            from,
            from_device,
            msg_id,
            timestamp_ms,
            inner,
            group,
            muted,
            entity,
        } => serde_json::json!({
            "event": "message", "from": from, "from_device": from_device, "msg_id": msg_id.to_string(),
            "timestamp_ms": timestamp_ms, "payload": inner.payload, "group": group, "muted": muted,
            "entity": entity.as_ref().map(|v| serde_json::json!({
                "entity": v.entity, "customer": v.customer, "agent": v.agent, "attribution": v.attribution,
            })),
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
        Event::ChatState { from, state, group } => serde_json::json!({
            "event": "chat_state", "from": from, "state": state.as_str_name(), "group": group,
        }),
        Event::Group {
            group,
            actor,
            op,
            accounts,
            subject,
        } => serde_json::json!({
            "event": "group", "group": group, "actor": actor, "op": op.as_str_name(), "accounts": accounts, "subject": subject,
        }),
        Event::DevicesChanged { account, devices } => serde_json::json!({
            "event": "devices_changed", "account": account, "devices": devices,
        }),
        Event::KeyChanged { account, device } => serde_json::json!({
            "event": "key_changed", "account": account, "device": device,
            "warning": super::trust::key_changed_warning(account, *device),
        }),
        Event::Presence {
            account,
            available,
            last_seen_ms,
        } => serde_json::json!({
            "event": "presence", "account": account, "available": available, "last_seen_ms": last_seen_ms,
        }),
        Event::History { from, entries } => {
            serde_json::json!({ "event": "history", "from": from, "entries": entries })
        }
        Event::Handover {
            entity,
            customer,
            from,
            entries,
        } => serde_json::json!({
            "event": "handover", "entity": entity, "customer": customer, "from": from, "entries": entries,
        }),
        Event::EntityRouting {
            entity,
            customer,
            kind,
            agent,
            actor,
        } => serde_json::json!({
            "event": "entity_routing", "entity": entity, "customer": customer,
            "kind": kind.as_str_name(), "agent": agent, "actor": actor,
        }),
    }
}

/// Interactive chat: lines typed are sent to `peer` (a phone number or a group id); everything
/// that arrives is printed.
async fn chat(client: &mut Client, peer: &str) -> anyhow::Result<()> {
    let account = client.state.account()?.to_owned();
    let is_group = crate::ids::is_group_id(peer);
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
                let sent = if is_group { client.send_group_text(peer, text).await } else { client.send_text(peer, text).await };
                match sent {
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
                follow_up(client, &event, false).await;
                if let Event::Message { from, msg_id, group, .. } = &event {
                    let here = if is_group { group.as_deref() == Some(peer) } else { from == peer && group.is_none() };
                    if here {
                        let _ = client.receipt(from, ReceiptKind::Read, &[*msg_id]).await;
                    }
                }
            }
        }
    }
}

async fn group(client: &mut Client, cmd: GroupCmd) -> anyhow::Result<()> {
    let info = match cmd {
        GroupCmd::Create { subject, members } => client.create_group(&subject, &members).await?,
        GroupCmd::Add { group, accounts } => {
            client
                .update_group(&group, GroupOp::Add, &accounts, "")
                .await?
        }
        GroupCmd::Remove { group, accounts } => {
            client
                .update_group(&group, GroupOp::Remove, &accounts, "")
                .await?
        }
        GroupCmd::Promote { group, accounts } => {
            client
                .update_group(&group, GroupOp::Promote, &accounts, "")
                .await?
        }
        GroupCmd::Leave { group } => {
            client.update_group(&group, GroupOp::Leave, &[], "").await?;
            println!("You left {group}.");
            return Ok(());
        }
        GroupCmd::Subject { group, subject } => {
            client
                .update_group(&group, GroupOp::SetSubject, &[], &subject)
                .await?
        }
        GroupCmd::Info { group } => client.group_info(&group).await?,
        GroupCmd::Send { group, text } => {
            let (msg_id, ack) = client.send_group_text(&group, &text.join(" ")).await?;
            println!("sent {msg_id} at {} ✓", ack.timestamp_ms);
            return Ok(());
        }
        GroupCmd::List => {
            for (id, g) in &client.state.groups {
                println!("{id}  \"{}\"  {} members", g.subject, g.members.len());
            }
            return Ok(());
        }
    };
    println!("group:   {}", info.group);
    println!("subject: {}", info.subject);
    println!("version: {}", info.version);
    for m in &info.members {
        println!(
            "  {}{}  devices {:?}{}",
            m.account,
            if m.admin { " (admin)" } else { "" },
            m.devices,
            if m.bridged { BRIDGED_NOTE } else { "" }
        );
    }
    Ok(())
}
