//! Multi-agent business entities through the real binary on real sockets: operators create
//! entities with `relaybox admin entity`, customers, the administrator and agents are SDK
//! clients. A customer writes to the entity; the administrator assigns the thread to an agent
//! with the history handed over end to end; the customer's client follows without any action.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{files_containing, next_event, Relay};
use relaybox::client::connection::ClientError;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::Payload;
use relaybox::wire::messages::ErrorCode;

const ENTITY: &str = "@acme-branch-12";
const ADMIN: &str = "+14155550100";
const DANA: &str = "+14155550101";
const ELI: &str = "+14155550102";
const FAY: &str = "+14155550103";
const CUSTOMER: &str = "+14155550111";
const OTHER_CUSTOMER: &str = "+14155550112";

/// `relaybox admin entity <args>` against `relay`; returns (exit code, stdout, stderr).
fn admin(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let url = relay.admin_url();
    let data = relay.data_dir().display().to_string();
    let mut all = vec!["admin", "--admin", &url, "--data-dir", &data, "entity"];
    all.extend_from_slice(args);
    relay.cli(&all)
}

fn admin_ok(relay: &Relay, args: &[&str]) -> String {
    let (code, out, err) = admin(relay, args);
    assert_eq!(code, 0, "relaybox admin entity {args:?}: {err}");
    out
}

/// The relay's error code behind an SDK error.
fn code_of(e: &anyhow::Error) -> ErrorCode {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Relay(err)) => err.code(),
        _ => panic!("not a relay error: {e:#}"),
    }
}

/// The text of the next message `c` receives (other events are skipped), with its event.
async fn next_text(c: &mut Client) -> (String, Event) {
    loop {
        let e = next_event(c).await;
        if let Event::Message { inner, .. } = &e {
            if let Payload::Text { body } = &inner.payload {
                return (body.clone(), e.clone());
            }
        }
    }
}

/// Fails if `c` receives a message within `wait` (other events are fine).
async fn no_message_within(c: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.next_event()).await {
            Err(_) => return,
            Ok(Ok(Event::Message { inner, from, .. })) => {
                panic!("unexpected message from {from}: {:?}", inner.payload)
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{e:#}"),
        }
    }
}

/// Waits for the handover of `customer`'s thread; answers how many entries it carried.
async fn handover(c: &mut Client, customer: &str) -> usize {
    loop {
        if let Event::Handover {
            customer: who,
            entries,
            entity,
            ..
        } = next_event(c).await
        {
            assert_eq!(entity, ENTITY);
            assert_eq!(who, customer);
            return entries;
        }
    }
}

/// A relay with the entity, its administrator and agents Dana and Eli (registered).
async fn branch(extra_create: &[&str]) -> (Relay, Client, Client, Client) {
    let relay = Relay::start();
    let admin_c = relay.user("admin", ADMIN).await;
    let dana = relay.user("dana", DANA).await;
    let eli = relay.user("eli", ELI).await;
    let mut args = vec![
        "create",
        ENTITY,
        "--name",
        "Acme Branch 12",
        "--admin",
        ADMIN,
    ];
    args.extend_from_slice(extra_create);
    let out = admin_ok(&relay, &args);
    assert!(out.contains(ENTITY), "{out}");
    admin_ok(&relay, &["add-agent", ENTITY, DANA, "--name", "Dana"]);
    let out = admin_ok(&relay, &["add-agent", ENTITY, ELI, "--name", "Eli"]);
    assert!(out.contains("Dana") && out.contains("Eli"), "{out}");
    (relay, admin_c, dana, eli)
}

#[tokio::test(flavor = "current_thread")]
async fn a_customer_thread_moves_from_the_administrator_to_agents_without_the_customer_acting() {
    let (relay, mut admin_c, mut dana, mut eli) = branch(&[]).await;
    let mut customer = relay.user("customer", CUSTOMER).await;

    // Customer → entity → administrator.
    customer
        .send_to_entity(ENTITY, "hello store, canary-7f3a9 here")
        .await
        .unwrap();
    let (text, e) = next_text(&mut admin_c).await;
    assert_eq!(text, "hello store, canary-7f3a9 here");
    let Event::Message { from, entity, .. } = e else {
        unreachable!()
    };
    assert_eq!(from, CUSTOMER);
    // A send to a business counts in the sender's abuse metrics, as any send does.
    let url = relay.admin_url();
    let (code, out, err) = relay.cli(&[
        "admin", "--admin", &url, "--json", "abuse", "show", CUSTOMER,
    ]);
    assert_eq!(code, 0, "{err}");
    let show: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(show["metrics"]["messages"], 1, "{show}");
    let via = entity.expect("an entity message");
    assert_eq!(
        (via.entity.as_str(), via.customer.as_str()),
        (ENTITY, CUSTOMER)
    );

    // Assignment to Dana: she decrypts the handover (the thread's history).
    let info = admin_c.assign_thread(ENTITY, CUSTOMER, DANA).await.unwrap();
    assert_eq!(info.threads[0].agent, DANA);
    assert_eq!(handover(&mut dana, CUSTOMER).await, 1);
    let key = relaybox::client::entities::thread_key(ENTITY, CUSTOMER);
    assert!(
        dana.state
            .history
            .iter()
            .any(|h| h.thread == key && h.body.contains("canary-7f3a9")),
        "Dana's client holds the handed-over history"
    );

    // The customer's next message reaches Dana and no longer the administrator.
    customer
        .send_to_entity(ENTITY, "is my order ready?")
        .await
        .unwrap();
    let (text, _) = next_text(&mut dana).await;
    assert_eq!(text, "is my order ready?");
    no_message_within(&mut admin_c, Duration::from_millis(800)).await;

    // Dana answers as the entity; the customer sees the entity, attributed to Dana.
    dana.reply_as_entity(ENTITY, CUSTOMER, "yes, at the front desk")
        .await
        .unwrap();
    let (text, e) = next_text(&mut customer).await;
    assert_eq!(text, "yes, at the front desk");
    let Event::Message { from, entity, .. } = e else {
        unreachable!()
    };
    assert_eq!(from, ENTITY);
    let via = entity.expect("an entity message");
    assert_eq!(via.agent.as_deref(), Some(DANA));
    assert_eq!(via.attribution, "Dana");

    // Reassignment to Eli: the history moves again, Dana can no longer answer.
    admin_c.assign_thread(ENTITY, CUSTOMER, ELI).await.unwrap();
    handover(&mut eli, CUSTOMER).await;
    customer.send_to_entity(ENTITY, "thanks!").await.unwrap();
    let (text, _) = next_text(&mut eli).await;
    assert_eq!(text, "thanks!");
    no_message_within(&mut dana, Duration::from_millis(500)).await;
    let err = dana
        .reply_as_entity(ENTITY, CUSTOMER, "still me")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAssigned);

    // Release back to the administrator, close, and a new message reopens to the administrator.
    admin_c.release_thread(ENTITY, CUSTOMER).await.unwrap();
    customer
        .send_to_entity(ENTITY, "one more thing")
        .await
        .unwrap();
    assert_eq!(next_text(&mut admin_c).await.0, "one more thing");
    let info = admin_c.close_thread(ENTITY, CUSTOMER).await.unwrap();
    assert!(!info.threads[0].open);
    customer.send_to_entity(ENTITY, "reopening").await.unwrap();
    assert_eq!(next_text(&mut admin_c).await.0, "reopening");
    let info = admin_c.entity_info(ENTITY, None).await.unwrap();
    assert!(info.threads[0].open && info.threads[0].agent.is_empty());
    // The customer's messages were acknowledged to it by the entity (two ticks).
    let delivered = loop {
        if let Event::Receipt { from, .. } = next_event(&mut customer).await {
            break from;
        }
    };
    assert_eq!(delivered, ENTITY);

    // The relay never held the handover or any message in plaintext; the audit log has the
    // assignments, with ids only.
    assert!(files_containing(&relay.data_dir(), b"canary-7f3a9").is_empty());
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    let assigned: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("entity thread assigned"))
        .collect();
    assert_eq!(assigned.len(), 2, "{audit}");
    assert!(assigned[0].contains(DANA) && assigned[0].contains(CUSTOMER));
    assert!(audit.contains("entity thread released") && audit.contains("entity thread closed"));
    assert!(!audit.contains("order ready"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_removed_agent_stops_receiving_at_once_and_its_threads_return_to_the_administrator() {
    let (relay, mut admin_c, mut dana, _eli) = branch(&[]).await;
    let mut customer = relay.user("customer", CUSTOMER).await;
    customer.send_to_entity(ENTITY, "hi").await.unwrap();
    next_text(&mut admin_c).await;
    admin_c.assign_thread(ENTITY, CUSTOMER, DANA).await.unwrap();
    handover(&mut dana, CUSTOMER).await;
    customer.send_to_entity(ENTITY, "for dana").await.unwrap();
    assert_eq!(next_text(&mut dana).await.0, "for dana");

    let info = admin_c.remove_agent(ENTITY, DANA).await.unwrap();
    assert!(info.agents.iter().all(|a| a.account != DANA));
    assert!(
        info.threads[0].agent.is_empty(),
        "the thread is back with the administrator"
    );

    customer
        .send_to_entity(ENTITY, "after removal")
        .await
        .unwrap();
    assert_eq!(next_text(&mut admin_c).await.0, "after removal");
    no_message_within(&mut dana, Duration::from_millis(800)).await;
    let err = dana
        .reply_as_entity(ENTITY, CUSTOMER, "I am gone")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAllowed);
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("entity agent removed"), "{audit}");
    assert!(audit.contains("agent removed)"), "{audit}");
}

#[tokio::test(flavor = "current_thread")]
async fn with_copying_on_the_administrator_also_receives_an_assigned_thread() {
    let (relay, mut admin_c, mut dana, _eli) = branch(&["--copy-admin"]).await;
    let mut customer = relay.user("customer", CUSTOMER).await;
    customer.send_to_entity(ENTITY, "hi").await.unwrap();
    next_text(&mut admin_c).await;
    admin_c.assign_thread(ENTITY, CUSTOMER, DANA).await.unwrap();
    customer.send_to_entity(ENTITY, "to both").await.unwrap();
    assert_eq!(next_text(&mut dana).await.0, "to both");
    assert_eq!(next_text(&mut admin_c).await.0, "to both");
}

#[tokio::test(flavor = "current_thread")]
async fn with_the_administrator_offline_round_robin_gives_three_agents_three_customers_each() {
    let relay = Relay::start();
    let mut admin_c = relay.user("admin", ADMIN).await;
    let mut agents = Vec::new();
    for (name, phone) in [("dana", DANA), ("eli", ELI), ("fay", FAY)] {
        agents.push(relay.user(name, phone).await);
    }
    admin_ok(
        &relay,
        &[
            "create",
            ENTITY,
            "--name",
            "Acme",
            "--admin",
            ADMIN,
            "--policy",
            "round-robin",
            "--auto-assign-after",
            "0s",
        ],
    );
    for (name, phone) in [("Dana", DANA), ("Eli", ELI), ("Fay", FAY)] {
        admin_ok(&relay, &["add-agent", ENTITY, phone, "--name", name]);
    }
    admin_c.disconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    for n in 0..9 {
        let phone = format!("+1415555020{n}");
        let mut c = relay.user(&format!("customer{n}"), &phone).await;
        c.send_to_entity(ENTITY, &format!("customer {n} here"))
            .await
            .unwrap();
    }
    for agent in &mut agents {
        for _ in 0..3 {
            let (text, _) = next_text(agent).await;
            assert!(text.starts_with("customer "), "{text}");
        }
        no_message_within(agent, Duration::from_millis(300)).await;
    }
    let out = admin_ok(&relay, &["show", ENTITY, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let loads: Vec<u64> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["open_threads"].as_u64().unwrap())
        .collect();
    assert_eq!(loads, vec![3, 3, 3], "{v}");
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert_eq!(audit.matches("\"who\":\"policy\"").count(), 9, "{audit}");
}

#[tokio::test(flavor = "current_thread")]
async fn agents_and_strangers_get_specific_errors() {
    let (relay, mut admin_c, mut dana, mut eli) = branch(&[]).await;
    let mut customer = relay.user("customer", CUSTOMER).await;
    let mut other = relay.user("other", OTHER_CUSTOMER).await;
    customer.send_to_entity(ENTITY, "hi").await.unwrap();
    other.send_to_entity(ENTITY, "hello").await.unwrap();
    admin_c.assign_thread(ENTITY, CUSTOMER, DANA).await.unwrap();
    admin_c
        .assign_thread(ENTITY, OTHER_CUSTOMER, ELI)
        .await
        .unwrap();

    // An agent may not assign, nor read or answer another agent's thread.
    let err = dana
        .assign_thread(ENTITY, OTHER_CUSTOMER, DANA)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotEntityAdmin);
    let err = dana
        .entity_info(ENTITY, Some(OTHER_CUSTOMER))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAssigned);
    let err = dana
        .reply_as_entity(ENTITY, OTHER_CUSTOMER, "x")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAssigned);
    let err = dana.close_thread(ENTITY, OTHER_CUSTOMER).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAssigned);
    let err = dana.remove_agent(ENTITY, ELI).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotEntityAdmin);
    // An agent sees only its own threads.
    let mine = dana.entity_info(ENTITY, None).await.unwrap();
    assert_eq!(mine.threads.len(), 1);
    assert_eq!(mine.threads[0].customer, CUSTOMER);
    let theirs = eli.entity_info(ENTITY, Some(OTHER_CUSTOMER)).await.unwrap();
    assert_eq!(theirs.threads[0].agent, ELI);
    // A customer is not staff.
    let err = customer.entity_info(ENTITY, None).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAllowed);

    // The administrator's mistakes.
    let err = admin_c
        .assign_thread(ENTITY, CUSTOMER, OTHER_CUSTOMER)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAnAgent);
    let err = admin_c
        .assign_thread(ENTITY, "+14155550999", DANA)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::UnknownThread);
    let err = admin_c
        .entity_info("@no-such-shop", None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::UnknownEntity);
    let err = admin_c
        .add_agent(ENTITY, "+14155550998", "Ghost")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    let err = admin_c.add_agent(ENTITY, FAY, "").await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    let err = admin_c.remove_agent(ENTITY, FAY).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAnAgent);
    let err = customer
        .send_to_entity("@no-such-shop", "hi")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::UnknownAccount);
    let err = dana
        .send_to_entity(ENTITY, "I work here")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::InvalidArgument);
    let err = customer
        .reply_as_entity(ENTITY, OTHER_CUSTOMER, "pretending")
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotAllowed);
}

#[tokio::test(flavor = "current_thread")]
async fn operators_get_clear_errors_and_non_zero_exits_for_bad_entities() {
    let relay = Relay::start();
    let _admin = relay.user("admin", ADMIN).await;
    admin_ok(
        &relay,
        &["create", ENTITY, "--name", "Acme", "--admin", ADMIN],
    );
    let cases: [(&[&str], &str); 7] = [
        (
            &["create", ENTITY, "--name", "Again", "--admin", ADMIN],
            "already taken",
        ),
        (
            &["create", "@other", "--name", "X", "--admin", "+14155550999"],
            "not a registered account",
        ),
        (
            &["create", "other", "--name", "X", "--admin", ADMIN],
            "handle",
        ),
        (
            &["create", "@other", "--name", "", "--admin", ADMIN],
            "display name",
        ),
        (
            &[
                "create",
                "@other",
                "--name",
                "X",
                "--admin",
                ADMIN,
                "--auto-assign-after",
                "soon",
            ],
            "auto_assign_after",
        ),
        (&["show", "@nobody"], "no business entity"),
        (&["remove-agent", ENTITY, DANA], "not an agent"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = admin(&relay, args);
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = admin(
        &relay,
        &[
            "create", "@x", "--name", "X", "--admin", ADMIN, "--policy", "random",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("round-robin"), "{err}");
    // Operators assign too (without history); the thread must exist.
    let (code, _, err) = admin(&relay, &["assign", ENTITY, CUSTOMER, DANA]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not an agent") || err.contains("no thread"),
        "{err}"
    );
}

/// `relaybox client --home <dir>/<home> <args>`; returns (exit code, stdout + stderr).
fn client_cli(relay: &Relay, home: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(common::BIN)
        .arg("client")
        .arg("--home")
        .arg(relay.dir.path().join(home))
        .arg("--relay")
        .arg(&relay.addr)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_branch_runs_from_terminals_with_relaybox_client() {
    let (relay, admin_c, mut dana, _eli) = branch(&[]).await;
    // The administrator works from its terminal (the same home as the SDK client).
    drop(admin_c);

    // A customer registers and writes to the store from a terminal.
    let (code, out) = client_cli(&relay, "cli-customer", &["register", CUSTOMER]);
    assert_eq!(code, 0, "{out}");
    let code_sent = relay.code_for(CUSTOMER);
    let (code, out) = client_cli(&relay, "cli-customer", &["verify", CUSTOMER, &code_sent]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = client_cli(
        &relay,
        "cli-customer",
        &["send", ENTITY, "where", "is", "my", "parcel?"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("to {ENTITY}")), "{out}");

    // The administrator sees it, lists the thread and assigns it to Dana.
    let (code, out) = client_cli(
        &relay,
        "client-admin",
        &["listen", "--count", "1", "--timeout", "20"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{ENTITY} ← {CUSTOMER}")) && out.contains("parcel"),
        "{out}"
    );
    let (code, out) = client_cli(&relay, "client-admin", &["entity", "threads", ENTITY]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(CUSTOMER) && out.contains("administrator"),
        "{out}"
    );
    let (code, out) = client_cli(
        &relay,
        "client-admin",
        &["entity", "assign", ENTITY, CUSTOMER, DANA],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Assigned"), "{out}");
    assert_eq!(handover(&mut dana, CUSTOMER).await, 1);

    // Dana answers as the store; the customer's terminal shows the store and Dana.
    dana.reply_as_entity(ENTITY, CUSTOMER, "on its way")
        .await
        .unwrap();
    let (code, out) = client_cli(
        &relay,
        "cli-customer",
        &["listen", "--read", "--count", "1", "--timeout", "20"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("[{ENTITY} (Dana)]")) && out.contains("on its way"),
        "{out}"
    );
    // Dana's answer was delivered to and read by the customer: the receipts come to her.
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        if let Event::Receipt { from, kind, .. } = next_event(&mut dana).await {
            assert_eq!(from, CUSTOMER);
            kinds.push(kind);
        }
    }
    assert!(
        kinds.contains(&relaybox::wire::messages::ReceiptKind::Read),
        "{kinds:?}"
    );

    // Mistakes at a terminal exit non-zero with the reason.
    let (code, out) = client_cli(&relay, "cli-customer", &["entity", "threads", "@nowhere"]);
    assert_ne!(code, 0);
    assert!(out.contains("no business entity"), "{out}");
    let (code, out) = client_cli(
        &relay,
        "cli-customer",
        &["entity", "assign", ENTITY, CUSTOMER, DANA],
    );
    assert_ne!(code, 0);
    assert!(out.contains("only the administrator"), "{out}");
}

async fn claim(c: &mut Client, account: &str) -> relaybox::wire::messages::ClaimedKeys {
    use relaybox::wire::messages::{client_frame, server_frame, ClaimKeys};
    let req = client_frame::Body::ClaimKeys(ClaimKeys {
        account: account.into(),
        devices: vec![],
    });
    match c.conn().await.unwrap().request(req).await.unwrap() {
        server_frame::Body::ClaimedKeys(k) => k,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_claim_for_the_entity_returns_the_devices_of_whoever_serves_the_customer() {
    let (relay, mut admin_c, _dana, _eli) = branch(&[]).await;
    let mut customer = relay.user("customer", CUSTOMER).await;
    let k = claim(&mut customer, ENTITY).await;
    assert_eq!(k.account, ENTITY);
    assert_eq!(k.devices.len(), 1);
    assert_eq!(k.devices[0].account, ADMIN);
    assert!(k.devices[0].one_time_key.is_some());
    admin_c.assign_thread(ENTITY, CUSTOMER, DANA).await.unwrap();
    let k = claim(&mut customer, ENTITY).await;
    assert_eq!(k.devices.len(), 1);
    assert_eq!(k.devices[0].account, DANA);
}

#[tokio::test(flavor = "current_thread")]
async fn least_loaded_assignment_evens_out_the_agents_after_an_operator_assignment() {
    let (relay, mut admin_c, mut dana, _eli) =
        branch(&["--policy", "least-loaded", "--auto-assign-after", "0s"]).await;
    // While the administrator is online, nothing is assigned automatically.
    let mut first = relay.user("first", CUSTOMER).await;
    first.send_to_entity(ENTITY, "first").await.unwrap();
    assert_eq!(next_text(&mut admin_c).await.0, "first");
    // An operator assigns it (no history: the agent gets the notice only).
    let out = admin_ok(&relay, &["assign", ENTITY, CUSTOMER, DANA]);
    assert!(out.contains(DANA), "{out}");
    loop {
        if let Event::EntityRouting {
            customer, actor, ..
        } = next_event(&mut dana).await
        {
            assert_eq!((customer.as_str(), actor.as_str()), (CUSTOMER, "operator"));
            break;
        }
    }

    admin_c.disconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..3 {
        let mut c = relay
            .user(&format!("late{n}"), &format!("+1415555030{n}"))
            .await;
        c.send_to_entity(ENTITY, "hello").await.unwrap();
    }
    // Eli (0) takes one, then Dana and Eli are even and Dana (first in order) takes one, then Eli.
    let out = admin_ok(&relay, &["threads", ENTITY, "--agent", ELI, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let eli_threads: Vec<&str> = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["customer"].as_str().unwrap())
        .collect();
    assert_eq!(eli_threads, vec!["+14155550300", "+14155550302"], "{v}");
    let loads: Vec<u64> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["open_threads"].as_u64().unwrap())
        .collect();
    assert_eq!(loads, vec![2, 2], "{v}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_entity_handle_cannot_be_provisioned_as_an_mqtt_device() {
    let relay = Relay::start();
    let _admin = relay.user("admin", ADMIN).await;
    admin_ok(
        &relay,
        &["create", ENTITY, "--name", "Acme", "--admin", ADMIN],
    );
    let url = relay.admin_url();
    let data = relay.data_dir().display().to_string();
    let (code, _, err) = relay.cli(&[
        "admin",
        "--admin",
        &url,
        "--data-dir",
        &data,
        "mqtt-device",
        "add",
        "acme-branch-12",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("acme-branch-12"), "{err}");
}
