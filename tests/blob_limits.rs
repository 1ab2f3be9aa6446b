//! Bounds of the blob store through the real binary and real HTTP: a pending upload reserves
//! its bytes of the account's quota when its URL is handed out (and gives them back when the
//! upload completes or its URL lapses unused), and a blob's tombstone (410 Gone) lasts
//! `blobs.tombstone_retention`, after which the relay forgets the id.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Relay, BIN, PATIENCE};
use relaybox::blob::BlobId;
use relaybox::client::connection::ClientError;
use relaybox::client::Client;
use relaybox::wire::messages::{
    client_frame, server_frame, BlobUrl, ErrorCode, RequestDownload, RequestUpload,
};

const ALICE: &str = "+14155550101";

async fn user(relay: &Relay, name: &str, phone: &str) -> Client {
    let mut c = relay.user(name, phone).await;
    c.state.http = Some(relay.http_addr.clone());
    c.state.save().unwrap();
    c
}

async fn ask(c: &mut Client, body: client_frame::Body) -> Result<BlobUrl, ClientError> {
    match c.conn().await.unwrap().request(body).await? {
        server_frame::Body::BlobUrl(u) => Ok(u),
        other => panic!("unexpected {other:?}"),
    }
}

async fn upload_url(c: &mut Client, content: &[u8]) -> Result<BlobUrl, ClientError> {
    let req = RequestUpload {
        sha256: BlobId::of(content).to_string(),
        size: u64::try_from(content.len()).unwrap(),
        segments: Vec::new(),
    };
    ask(c, client_frame::Body::RequestUpload(req)).await
}

async fn download_url(c: &mut Client, blob: &str) -> Result<BlobUrl, ClientError> {
    let req = RequestDownload {
        blob: blob.to_owned(),
    };
    ask(c, client_frame::Body::RequestDownload(req)).await
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// PUTs `body` to a signed path; returns the HTTP status.
fn put(relay: &Relay, path: &str, body: &[u8]) -> u16 {
    let url = format!("http://{}{path}", relay.http_addr);
    agent().put(&url).send(body).unwrap().status().as_u16()
}

/// GETs a signed path; returns the status and the JSON `error` of a refusal.
fn get(relay: &Relay, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", relay.http_addr);
    let mut res = agent().get(&url).call().unwrap();
    let status = res.status().as_u16();
    let body = res.body_mut().read_to_string().unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, reason)
}

/// The account's usage as the admin API reports it (stored plus reserved bytes).
fn usage(relay: &Relay, account: &str) -> u64 {
    let (code, out, err) = relay.cli(&[
        "admin",
        "--admin",
        &relay.admin_url(),
        "--data-dir",
        relay.data_dir().to_str().unwrap(),
        "--json",
        "blobs",
        "usage",
        "--account",
        account,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["account"]["bytes"].as_u64().unwrap()
}

#[tokio::test]
async fn pending_uploads_reserve_quota_until_they_complete_or_their_url_lapses() {
    let relay = Relay::start_with(
        "[blobs]\nmax_blob_bytes = 1000\naccount_quota_bytes = 1500\nurl_ttl = \"1s\"\ngc_interval = \"100ms\"\n",
    );
    let mut alice = user(&relay, "alice", ALICE).await;
    let a = vec![b'a'; 900];
    let b = vec![b'b'; 900];
    let c = vec![b'c'; 500];

    // Two uploads that fit one at a time but not together: the second URL is refused at
    // once, before a byte is sent, because the first reserved its 900 bytes.
    let ua = upload_url(&mut alice, &a).await.unwrap();
    assert_eq!(
        usage(&relay, ALICE),
        900,
        "the URL reserved the declared size"
    );
    let over = upload_url(&mut alice, &b).await.unwrap_err();
    assert_eq!(over.relay_code(), Some(ErrorCode::QuotaExceeded), "{over}");
    assert!(over.to_string().contains("reserved"), "{over}");
    // Asking again for the same content re-uses its reservation instead of adding another.
    let ua = {
        let again = upload_url(&mut alice, &a).await.unwrap();
        assert_eq!(usage(&relay, ALICE), 900);
        assert_eq!(again.blob, ua.blob);
        again
    };
    // What is left fits.
    let uc = upload_url(&mut alice, &c).await.unwrap();
    assert_eq!(usage(&relay, ALICE), 1400);
    assert_eq!(put(&relay, &ua.url, &a), 201);
    assert_eq!(
        usage(&relay, ALICE),
        1400,
        "the reservation became the blob's charge"
    );
    assert_eq!(put(&relay, &uc.url, &c), 201);
    assert_eq!(usage(&relay, ALICE), 1400);

    // An upload URL that lapses unused gives its bytes back (another account, whose quota
    // alice's stored blobs do not fill).
    let mut bob = user(&relay, "bob", "+14155550102").await;
    let ub = upload_url(&mut bob, &b).await.unwrap();
    assert_eq!(usage(&relay, "+14155550102"), 900);
    let d = vec![b'd'; 900];
    let refused = upload_url(&mut bob, &d).await.unwrap_err();
    assert_eq!(refused.relay_code(), Some(ErrorCode::QuotaExceeded));
    // The pending record outlives its URL by one more TTL, then the collector ends it.
    let deadline = Instant::now() + PATIENCE;
    while usage(&relay, "+14155550102") != 0 {
        assert!(
            Instant::now() < deadline,
            "the lapsed reservation was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        put(&relay, &ub.url, &b),
        403,
        "the lapsed URL no longer uploads"
    );
    let ud = upload_url(&mut bob, &d).await.unwrap();
    assert_eq!(put(&relay, &ud.url, &d), 201);
    assert_eq!(usage(&relay, "+14155550102"), 900);
}

#[tokio::test]
async fn a_tombstone_answers_gone_for_its_retention_then_the_id_is_forgotten() {
    // A tombstone must last at least messaging.retention: both are short here.
    let relay = Relay::start_with(
        "[messaging]\nretention = \"2s\"\n\n[blobs]\nretention = \"1s\"\ntombstone_retention = \"2s\"\ngc_interval = \"100ms\"\n",
    );
    let mut alice = user(&relay, "alice", ALICE).await;
    let content = vec![7u8; 100];
    let id = alice
        .upload_blob(std::slice::from_ref(&content))
        .await
        .unwrap();
    let signed = download_url(&mut alice, &id).await.unwrap().url;
    assert_eq!(get(&relay, &signed).0, 200);

    // Expired: its id answers 410 Gone (a recipient then recalls it from the sender).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, reason) = get(&relay, &signed);
        if status == 410 {
            assert_eq!(reason, "gone");
            break;
        }
        assert_eq!(status, 200, "{reason}");
        assert!(Instant::now() < deadline, "the blob did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_at = Instant::now();
    assert!(
        download_url(&mut alice, &id).await.is_ok(),
        "the right is kept with the tombstone"
    );

    // tombstone_retention later the relay forgets the id and who could fetch it: the old
    // URL is answered as for an id never sent to this account, and no new URL is signed.
    loop {
        let (status, reason) = get(&relay, &signed);
        if status == 403 {
            assert_eq!(reason, "not_allowed");
            break;
        }
        assert_eq!((status, reason.as_str()), (410, "gone"));
        assert!(
            Instant::now() < deadline,
            "the tombstone was kept past its retention"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone_at.elapsed() >= Duration::from_millis(1500),
        "the tombstone lasted its retention ({:?})",
        gone_at.elapsed()
    );
    let refused = download_url(&mut alice, &id).await.unwrap_err();
    assert_eq!(
        refused.relay_code(),
        Some(ErrorCode::NotAllowed),
        "{refused}"
    );
    // The same content can be uploaded again as new.
    let again = alice.upload_blob(&[content]).await.unwrap();
    assert_eq!(again, id);
}

#[test]
fn a_tombstone_retention_shorter_than_message_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[messaging]\nretention = \"7d\"\n\n[blobs]\ntombstone_retention = \"1d\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("blobs.tombstone_retention")
            && err.contains("must be at least messaging.retention"),
        "{err}"
    );
}
