//! The operator API's OpenAPI description against the real binary: it is served without a
//! token and declares the bearer scheme, and schemathesis (an independent OpenAPI fuzzer, from
//! PyPI) drives every operation it describes with the relay's token, on a relay holding
//! accounts, an entity with an agent and a thread, and an MQTT device, so that the schema's
//! examples reach real records.
//!
//! Needs schemathesis's `st` (`tests/run.sh` installs it into a venv under `target/` and sets
//! `SCHEMATHESIS` to it; otherwise `st` on PATH). Without it the test fails and says how to
//! install it, rather than passing unseen.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Relay;

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";
const CAROL: &str = "+14155550103";

/// The longest a schemathesis run may take before the test fails (CI's whole run is bounded).
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(240);
/// Cases per operation and phase: enough to find what a handler refuses wrongly, small
/// enough that a run takes well under a minute on two cores.
const MAX_EXAMPLES: &str = "40";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `method path` with the token and an optional JSON body; (status, JSON, headers' Allow).
fn api(
    relay: &Relay,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", relay.admin_url());
    let auth = format!("Bearer {}", relay.admin_token());
    let a = agent();
    let res = match (method, body) {
        ("POST", Some(b)) => a.post(&url).header("Authorization", &auth).send_json(b),
        ("PUT", Some(b)) => a.put(&url).header("Authorization", &auth).send_json(b),
        ("GET", None) => a.get(&url).header("Authorization", &auth).call(),
        ("POST", None) => a.post(&url).header("Authorization", &auth).send_empty(),
        (m, _) => panic!("{m} not used here"),
    }
    .unwrap();
    let status = res.status().as_u16();
    let text = res.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// The `st` to run: `SCHEMATHESIS` (tests/run.sh sets it), made absolute when it is a path,
/// because the run below starts in the relay's temp dir; else `st` from PATH.
fn schemathesis() -> String {
    match std::env::var("SCHEMATHESIS") {
        Ok(p) if p.contains('/') => std::fs::canonicalize(&p)
            .map(|abs| abs.display().to_string())
            .unwrap_or(p),
        Ok(p) => p,
        Err(_) => "st".into(),
    }
}

#[test]
fn the_description_needs_no_token_declares_the_bearer_scheme_and_405_names_allow() {
    let relay = Relay::start();
    let res = agent()
        .get(format!("{}/v1/openapi.json", relay.admin_url()))
        .call()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let doc: serde_json::Value =
        serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let stats = &doc["paths"]["/v1/stats"]["get"];
    assert_eq!(stats["security"][0]["bearer"], serde_json::json!([]));
    assert!(stats["responses"]["401"].is_object(), "{stats}");
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());

    // Every operation described is in the README's route table, as `METHOD /path`.
    let readme = include_str!("../README.md");
    let mut missing = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let row = format!("| `{} {path}", method.to_uppercase());
            if !readme.contains(&row) {
                missing.push(row);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README's operator API table lacks {missing:?}"
    );

    // The description is not an audited action; a token route still refuses no token.
    let res = agent()
        .get(format!("{}/v1/stats", relay.admin_url()))
        .call()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // A known route with another method: 405, its JSON error, and the methods it accepts.
    let res = agent()
        .put(format!("{}/v1/mqtt/devices", relay.admin_url()))
        .header("Authorization", &format!("Bearer {}", relay.admin_token()))
        .send_empty()
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let allow = res.headers().get("allow").unwrap().to_str().unwrap();
    assert_eq!(allow, "GET, POST");
    let v: serde_json::Value =
        serde_json::from_str(&res.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn schemathesis_finds_no_failure_in_any_operation_of_the_admin_api() {
    let relay = Relay::start();
    // Records for the schema's examples (+14155550101, @acme, sensor-1, …) to find.
    // Registered, then offline: the run below blocks this test's runtime.
    for (name, phone) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)] {
        drop(relay.user(name, phone).await);
    }
    let (status, v) = api(
        &relay,
        "POST",
        "/v1/entities",
        Some(serde_json::json!({"handle": "@acme", "name": "Acme", "admin": ALICE})),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = api(
        &relay,
        "PUT",
        &format!("/v1/entities/@acme/agents/{}", BOB.replace('+', "%2B")),
        Some(serde_json::json!({"name": "Bob"})),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(
        &relay,
        "POST",
        "/v1/mqtt/devices",
        Some(serde_json::json!({"id": "sensor-1", "name": "Door sensor"})),
    );
    assert_eq!(status, 201, "{v}");

    let url = format!("{}/v1/openapi.json", relay.admin_url());
    let started = Instant::now();
    let mut child = Command::new(schemathesis())
        .args([
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml"),
        ])
        .args(["run", &url, "--max-examples", MAX_EXAMPLES, "--no-color"])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", relay.admin_token()),
        ])
        // Its own files (hypothesis's example database) go to the relay's temp dir.
        .current_dir(relay.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): pip install schemathesis, or run tests/run.sh",
                schemathesis()
            )
        });
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > SCHEMATHESIS_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {SCHEMATHESIS_DEADLINE:?}:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    out.push_str(&reader.join().unwrap());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    eprintln!(
        "schemathesis took {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        out.lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(status.success(), "schemathesis failed:\n{out}\n{err}");

    // It tested every operation the description has, in every phase, and found nothing.
    let doc: serde_json::Value = serde_json::from_str(
        &agent()
            .get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    // schemathesis leaves out the operation that serves the description it was given.
    let tested = operations - 1;
    assert!(
        out.contains(&format!("Tested: {tested}")),
        "not all {tested} operations besides the description were tested:\n{out}"
    );
    for phase in ["Examples", "Coverage", "Fuzzing"] {
        assert!(
            out.contains(&format!("✅ {phase}")),
            "phase {phase} did not pass:\n{out}"
        );
    }
    let logs = relay.logs();
    assert!(!logs.contains("panicked"), "the relay panicked:\n{logs}");
}

#[tokio::test]
async fn bad_bodies_and_references_get_specific_errors() {
    let relay = Relay::start();
    drop(relay.user("alice", ALICE).await);
    let (status, v) = api(
        &relay,
        "POST",
        "/v1/entities",
        Some(serde_json::json!({"handle": "@acme", "name": "Acme", "admin": ALICE})),
    );
    assert_eq!(status, 201, "{v}");
    let raw = |method: &str, path: &str, body: &str| {
        let url = format!("{}{path}", relay.admin_url());
        let req = agent()
            .run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("Authorization", format!("Bearer {}", relay.admin_token()))
                    .header("Content-Type", "application/json")
                    .body(body.to_owned())
                    .unwrap(),
            )
            .unwrap();
        let status = req.status().as_u16();
        let v: serde_json::Value =
            serde_json::from_str(&req.into_body().read_to_string().unwrap()).unwrap();
        (status, v)
    };
    // serde would read a struct from an array; the API wants an object.
    for (method, path, body) in [
        ("PATCH", "/v1/entities/@acme", "[null, null]"),
        ("POST", "/v1/entities", "[\"@x\", \"X\", \"+14155550101\"]"),
        ("POST", "/v1/mqtt/devices", "\"sensor-1\""),
        ("PUT", "/v1/entities/@acme/agents/%2B14155550102", "null"),
    ] {
        let (status, v) = raw(method, path, body);
        assert_eq!(status, 400, "{method} {path} {body}: {v}");
        assert_eq!(v["error"]["parameter"], "body", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{v}"
        );
    }
    // Assigning needs the agent; the other actions take no body.
    let (status, v) = raw(
        "POST",
        "/v1/entities/@acme/threads/%2B14155550103/assign",
        "",
    );
    assert_eq!(
        (status, &v["error"]["parameter"]),
        (400, &"body".into()),
        "{v}"
    );
    // References to what does not exist: 404, naming it.
    let (status, v) = raw(
        "PUT",
        "/v1/entities/@acme/agents/%2B14155550199",
        "{\"name\": \"Nobody\"}",
    );
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("+14155550199 is not a registered account"),
        "{v}"
    );
    let (status, v) = raw(
        "POST",
        "/v1/entities",
        "{\"handle\": \"@other\", \"name\": \"X\", \"admin\": \"+14155550199\"}",
    );
    assert_eq!(status, 404, "{v}");
    let (status, v) = raw(
        "POST",
        "/v1/mqtt/devices",
        "{\"id\": \"till-1\", \"threads\": [\"g-nope\"]}",
    );
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v}"
    );
    // Provisioning what exists already: 409.
    let (status, v) = raw("POST", "/v1/mqtt/devices", "{\"id\": \"till-1\"}");
    assert_eq!(status, 201, "{v}");
    let (status, v) = raw("POST", "/v1/mqtt/devices", "{\"id\": \"till-1\"}");
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    let (status, v) = raw("POST", "/v1/mqtt/devices", "{\"id\": \"acme\"}");
    assert_eq!(status, 409, "an entity's handle is taken: {v}");
    let (status, v) = raw(
        "POST",
        "/v1/entities",
        "{\"handle\": \"@acme\", \"name\": \"Again\", \"admin\": \"+14155550101\"}",
    );
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already taken"),
        "{v}"
    );
    // A device name is counted in characters, as the description says: 64 accented letters
    // (128 bytes) are a name, 65 are too long.
    let name = "é".repeat(64);
    let (status, v) = raw(
        "POST",
        "/v1/mqtt/devices",
        &format!("{{\"id\": \"till-2\", \"name\": \"{name}\"}}"),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = raw(
        "POST",
        "/v1/mqtt/devices",
        &format!("{{\"id\": \"till-3\", \"name\": \"{name}é\"}}"),
    );
    assert_eq!(
        (status, &v["error"]["parameter"]),
        (400, &"name".into()),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 characters"),
        "{v}"
    );
    // So is an entity's or agent's display name.
    drop(relay.user("bob", "+14155550102").await);
    let agent_path = "/v1/entities/@acme/agents/%2B14155550102";
    let (status, v) = raw("PUT", agent_path, &format!("{{\"name\": \"{name}\"}}"));
    assert_eq!(status, 200, "{v}");
    let (status, v) = raw("PUT", agent_path, &format!("{{\"name\": \"{name}é\"}}"));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 characters"),
        "{v}"
    );
    // An account written in canonical E.164 is looked up as it is: unknown means 404.
    let (status, v) = api(&relay, "GET", "/v1/accounts/%2B10000000000", None);
    assert_eq!(status, 404, "{v}");
    let (status, v) = api(&relay, "GET", "/v1/accounts/12ab", None);
    assert_eq!(
        (status, &v["error"]["parameter"]),
        (400, &"phone".into()),
        "{v}"
    );
}
