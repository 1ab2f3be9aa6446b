//! Blobs through the real binary and real HTTP: uploads and downloads with signed URLs (Range,
//! segments), every bad HTTP input answered by its own status (driven with curl), quota and
//! size limits, the garbage collector, progressive images sent with `relaybox client send
//! --image`, recall of a purged image, history transfer to a linked device via a blob, and who
//! may fetch a blob (the uploader and the recipients of a message naming it).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{next_event, Relay, BIN};
use relaybox::blob::BlobId;
use relaybox::client::connection::ClientError;
use relaybox::client::{Client, Event};
use relaybox::e2e::payload::{Inner, Media, Payload};
use relaybox::ids::MsgId;
use relaybox::wire::messages::{
    client_frame, server_frame, BlobUrl, Envelope, ErrorCode, GroupOp, MessageKind,
    RequestDownload, RequestUpload, Send,
};

const ALICE: &str = "+14155550101";
const BOB: &str = "+14155550102";

/// A relay with small limits so that every refusal is reachable with a few bytes.
const SMALL: &str = "[blobs]\nmax_blob_bytes = 1000\naccount_quota_bytes = 1500\n";

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

async fn upload_url(c: &mut Client, content: &[u8], declared: u64) -> Result<BlobUrl, ClientError> {
    let req = RequestUpload {
        sha256: BlobId::of(content).to_string(),
        size: declared,
        segments: Vec::new(),
    };
    ask(c, client_frame::Body::RequestUpload(req)).await
}

async fn download_url(c: &mut Client, blob: &str) -> String {
    let req = RequestDownload {
        blob: blob.to_owned(),
    };
    ask(c, client_frame::Body::RequestDownload(req))
        .await
        .unwrap()
        .url
}

/// Sends `to` a media message pointing at `blob`, which passes on the right to fetch it.
async fn point_at(from: &mut Client, to: &str, blob: &str) {
    let inner = Inner::new(
        1,
        Payload::Media(Media {
            blob: blob.to_owned(),
            segments: Vec::new(),
            resend_of: None,
        }),
    );
    from.send_inner(to, MsgId::random(), &inner).await.unwrap();
}

/// Runs curl; returns (status, headers, body).
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-sS", "--path-as-is", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(headers).unwrap_or_default(),
        std::fs::read(body).unwrap_or_default(),
    )
}

/// The `error` field of a refusal's JSON body.
fn reason(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "JSON body expected, got {:?}",
            String::from_utf8_lossy(body)
        )
    });
    v["error"].as_str().unwrap_or_default().to_owned()
}

fn url(relay: &Relay, path: &str) -> String {
    format!("http://{}{path}", relay.http_addr)
}

fn put(relay: &Relay, path: &str, file: &Path) -> (u16, String) {
    let (status, _, body) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", file.display()),
        &url(relay, path),
    ]);
    (
        status,
        if status >= 400 {
            reason(&body)
        } else {
            String::new()
        },
    )
}

fn get(relay: &Relay, path: &str) -> (u16, String) {
    let (status, _, body) = curl(&[&url(relay, path)]);
    (
        status,
        if status >= 400 {
            reason(&body)
        } else {
            String::new()
        },
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn blob_file(relay: &Relay, id: &str) -> PathBuf {
    relay.data_dir().join("blobs").join(&id[..2]).join(id)
}

#[tokio::test]
async fn an_upload_round_trips_and_range_and_segments_are_honoured() {
    let relay = Relay::start();
    let mut alice = user(&relay, "alice", ALICE).await;
    let mut bob = user(&relay, "bob", BOB).await;
    let segments = vec![
        b"thumb".to_vec(),
        b"middle".to_vec(),
        b"the full piece".to_vec(),
    ];
    let id = alice.upload_blob(&segments).await.unwrap();
    assert_eq!(id, BlobId::of(&segments.concat()).to_string());
    assert!(
        blob_file(&relay, &id).exists(),
        "stored under blobs/ab/abcd…"
    );

    // A message naming the blob passes the right to fetch it; segment 0 alone comes first.
    point_at(&mut alice, BOB, &id).await;
    assert_eq!(bob.download_blob(&id, Some(0)).await.unwrap(), b"thumb");
    assert_eq!(
        bob.download_blob(&id, Some(2)).await.unwrap(),
        b"the full piece"
    );
    assert_eq!(
        bob.download_blob(&id, None).await.unwrap(),
        segments.concat()
    );

    let path = download_url(&mut bob, &id).await;
    let (status, headers, body) = curl(&["-H", "Range: bytes=5-10", &url(&relay, &path)]);
    assert_eq!(status, 206, "{headers}");
    assert_eq!(body, b"middle");
    let lower = headers.to_ascii_lowercase();
    assert!(lower.contains("content-range: bytes 5-10/25"), "{headers}");
    assert!(lower.contains(&format!("etag: \"{id}\"")), "{headers}");
    let (status, _, body) = curl(&[
        "-H",
        "Range: bytes=-4",
        &url(&relay, &format!("{path}&seg=2")),
    ]);
    assert_eq!((status, body.as_slice()), (206, &b"iece"[..]));
    let (status, _, body) = curl(&[
        "-H",
        &format!("If-None-Match: \"{id}\""),
        &url(&relay, &path),
    ]);
    assert_eq!((status, body.len()), (304, 0), "the ETag is the id");
    let (status, headers, _) = curl(&["-I", &url(&relay, &path)]);
    assert_eq!(status, 200);
    assert!(
        headers.to_ascii_lowercase().contains("content-length: 25"),
        "{headers}"
    );
    let (status, headers, _) = curl(&["-H", "Range: bytes=100-", &url(&relay, &path)]);
    assert_eq!(status, 416);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-range: bytes */25"),
        "{headers}"
    );

    // A segment the blob does not have.
    for bad in ["3", "x", "-1"] {
        assert_eq!(
            get(&relay, &format!("{path}&seg={bad}")),
            (400, "bad_segment".into()),
            "seg={bad}"
        );
    }

    // A file lost from disk (damage, a partial restore) answers Gone, so receivers recall it.
    let lost = bob.upload_blob(&[b"soon lost".to_vec()]).await.unwrap();
    let lost_url = download_url(&mut bob, &lost).await;
    std::fs::remove_file(blob_file(&relay, &lost)).unwrap();
    assert_eq!(get(&relay, &lost_url), (410, "gone".into()));
    // Uploading the same content again puts the file back.
    let again = upload_url(&mut bob, b"soon lost", 9).await.unwrap();
    assert!(!again.stored, "a lost file must be uploaded again");
    bob.upload_blob(&[b"soon lost".to_vec()]).await.unwrap();
    assert_eq!(bob.download_blob(&lost, None).await.unwrap(), b"soon lost");

    // The same content again needs no upload.
    let again = upload_url(&mut alice, &segments.concat(), 25)
        .await
        .unwrap();
    assert!(again.stored);
}

/// A Send that names `blob`, from a client that never held it (the hostile peer: our SDK names
/// only blobs it uploaded or was sent). The blob check comes before the envelopes are matched.
async fn send_naming(c: &mut Client, to: &str, blobs: &[String]) -> ClientError {
    let send = Send {
        msg_id: MsgId::random().0.to_vec(),
        to: to.to_owned(),
        envelopes: vec![Envelope {
            device: 0,
            olm_type: 1,
            ciphertext: vec![0xC1; 32].into(),
            account: String::new(),
        }],
        kind: MessageKind::Chat as i32,
        blobs: blobs.to_vec(),
        ..Default::default()
    };
    c.conn()
        .await
        .unwrap()
        .request(client_frame::Body::Send(send))
        .await
        .unwrap_err()
}

async fn download_refusal(c: &mut Client, blob: &str) -> ClientError {
    let req = RequestDownload {
        blob: blob.to_owned(),
    };
    ask(c, client_frame::Body::RequestDownload(req))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn only_the_uploader_and_the_recipients_of_a_message_naming_a_blob_may_fetch_it() {
    let relay = Relay::start();
    let mut alice = user(&relay, "alice", ALICE).await;
    let mut bob = user(&relay, "bob", BOB).await;
    let mut mallory = user(&relay, "mallory", "+14155550109").await;
    let mut dave = user(&relay, "dave", "+14155550104").await;
    let content = b"an encrypted till receipt".to_vec();
    let id = alice
        .upload_blob(std::slice::from_ref(&content))
        .await
        .unwrap();

    // Knowing the id is not enough, and the refusal is the one for content nobody stored.
    let known = download_refusal(&mut mallory, &id).await;
    assert_eq!(known.relay_code(), Some(ErrorCode::NotAllowed), "{known}");
    let nobody = BlobId::of(b"never stored").to_string();
    let unknown = download_refusal(&mut mallory, &nobody).await;
    assert_eq!(
        known.to_string().replace(&id, "ID"),
        unknown.to_string().replace(&nobody, "ID"),
        "the refusal must not tell whether the relay holds the content"
    );
    // Nor does RequestUpload say that someone else stored it.
    assert!(upload_url(&mut alice, &content, 25).await.unwrap().stored);
    let probe = upload_url(&mut mallory, &content, 25).await.unwrap();
    assert!(!probe.stored, "stored=true would say the relay holds it");
    // A message cannot pass on a right its sender does not hold.
    let e = send_naming(&mut mallory, BOB, std::slice::from_ref(&id)).await;
    assert_eq!(e.relay_code(), Some(ErrorCode::NotAllowed), "{e}");
    assert_eq!(
        download_refusal(&mut bob, &id).await.relay_code(),
        Some(ErrorCode::NotAllowed)
    );
    // A bad id in Send.blobs is refused by name, and so are too many.
    let e = send_naming(&mut alice, BOB, &["../../relay.key".to_owned()]).await;
    assert_eq!(e.relay_code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("path syntax"), "{e}");
    let e = send_naming(&mut alice, BOB, &vec![id.clone(); 17]).await;
    assert_eq!(e.relay_code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("at most 16 blobs"), "{e}");

    // The sender's message to Bob passes it on; Bob may then forward it to Dave.
    point_at(&mut alice, BOB, &id).await;
    assert_eq!(bob.download_blob(&id, None).await.unwrap(), content);
    point_at(&mut bob, "+14155550104", &id).await;
    assert_eq!(dave.download_blob(&id, None).await.unwrap(), content);
    assert_eq!(
        download_refusal(&mut mallory, &id).await.relay_code(),
        Some(ErrorCode::NotAllowed)
    );
    // Uploading the very bytes proves Mallory has them; it is answered like any upload.
    let dir = tempfile::tempdir().unwrap();
    let (status, _) = put(&relay, &probe.url, &write(dir.path(), "c", &content));
    assert_eq!(status, 201, "as for a first upload");
    assert_eq!(mallory.download_blob(&id, None).await.unwrap(), content);

    // A group message passes it to the group: a member removed later loses it, even with a
    // URL signed while still a member.
    let group = alice
        .create_group("till", &[BOB.to_owned(), "+14155550104".to_owned()])
        .await
        .unwrap()
        .group;
    let photo = b"a group photo".to_vec();
    let gid = alice
        .upload_blob(std::slice::from_ref(&photo))
        .await
        .unwrap();
    let inner = Inner::new(
        1,
        Payload::Media(Media {
            blob: gid.clone(),
            segments: Vec::new(),
            resend_of: None,
        }),
    );
    alice
        .send_group_inner(&group, MsgId::random(), &inner)
        .await
        .unwrap();
    assert_eq!(dave.download_blob(&gid, None).await.unwrap(), photo);
    let signed = download_url(&mut dave, &gid).await;
    alice
        .update_group(&group, GroupOp::Remove, &["+14155550104".to_owned()], "")
        .await
        .unwrap();
    assert_eq!(
        download_refusal(&mut dave, &gid).await.relay_code(),
        Some(ErrorCode::NotAllowed)
    );
    assert_eq!(get(&relay, &signed), (403, "not_allowed".into()));
    assert_eq!(bob.download_blob(&gid, None).await.unwrap(), photo);
    assert!(relay.logs().contains("not_allowed"));
}

#[tokio::test]
async fn every_bad_http_input_gets_its_own_status_and_reason() {
    let relay = Relay::start_with(SMALL);
    let mut alice = user(&relay, "alice", ALICE).await;
    let dir = tempfile::tempdir().unwrap();
    let content = b"0123456789".to_vec();
    let file = write(dir.path(), "ten", &content);
    let id = BlobId::of(&content).to_string();
    let up = upload_url(&mut alice, &content, 10).await.unwrap();
    let query = up.url.split_once('?').unwrap().1.to_owned();

    // Bad ids and traversal never reach the filesystem.
    assert_eq!(
        get(&relay, &format!("/v1/blobs/xyz?{query}")),
        (400, "bad_blob_id".into())
    );
    assert_eq!(
        get(&relay, &format!("/v1/blobs/{}?{query}", id.to_uppercase())),
        (400, "bad_blob_id".into())
    );
    for evil in [
        "/v1/blobs/../../relay.key",
        "/v1/blobs/..%2f..%2frelay.key",
        "/v1/blobs/%2e%2e/db",
        "/v1/blobs/ab/../../relay.key",
    ] {
        assert_eq!(
            get(&relay, &format!("{evil}?{query}")),
            (400, "path_traversal".into()),
            "{evil}"
        );
    }
    // Signatures: missing, wrong, for another blob, for the other method.
    assert_eq!(
        get(&relay, &format!("/v1/blobs/{id}")),
        (403, "missing_signature".into())
    );
    let forged = up.url.replace("sig=", "sig=00");
    assert_eq!(put(&relay, &forged, &file), (403, "bad_signature".into()));
    let other = BlobId::of(b"other").to_string();
    assert_eq!(
        put(&relay, &up.url.replace(&id, &other), &file),
        (403, "bad_signature".into())
    );
    assert_eq!(
        get(&relay, &up.url),
        (403, "wrong_method".into()),
        "an upload URL does not download"
    );
    // Unknown: no URL is signed for a blob never uploaded, and the answer is the one for a
    // blob held by someone else.
    let never = alice
        .conn()
        .await
        .unwrap()
        .request(client_frame::Body::RequestDownload(RequestDownload {
            blob: id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(never.relay_code(), Some(ErrorCode::NotAllowed), "{never}");

    // Oversize: more than declared (with and without Content-Length); nothing is kept.
    let twenty = write(dir.path(), "twenty", &[b'x'; 20]);
    assert_eq!(put(&relay, &up.url, &twenty), (413, "too_large".into()));
    let (status, _, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", twenty.display()),
        &url(&relay, &up.url),
    ]);
    assert_eq!((status, reason(&body)), (413, "too_large".into()));
    // Content that does not hash to the id.
    let wrong = write(dir.path(), "wrong", b"9876543210");
    assert_eq!(put(&relay, &up.url, &wrong), (422, "hash_mismatch".into()));
    assert!(!blob_file(&relay, &id).exists());
    let tmp = std::fs::read_dir(relay.data_dir().join("blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "refused uploads leave no temporary file");
    // The right bytes are accepted, then the download works.
    assert_eq!(put(&relay, &up.url, &file).0, 201);
    let down = download_url(&mut alice, &id).await;
    assert_eq!(
        put(&relay, &down, &file),
        (403, "wrong_method".into()),
        "a download URL does not upload"
    );
    let (status, _, body) = curl(&[&url(&relay, &down)]);
    assert_eq!((status, body), (200, content.clone()));

    // Limits at request time: larger than max_blob_bytes, over the account quota.
    let big = upload_url(&mut alice, b"big", 1001).await.unwrap_err();
    assert_eq!(big.relay_code(), Some(ErrorCode::BlobTooLarge), "{big}");
    let a = vec![b'a'; 900];
    let b = vec![b'b'; 900];
    let ua = upload_url(&mut alice, &a, 900).await.unwrap();
    // The first URL reserved its bytes: the second is refused before anything is uploaded
    // (tests/blob_limits.rs covers reservations in full).
    let over = upload_url(&mut alice, &b, 900).await.unwrap_err();
    assert_eq!(over.relay_code(), Some(ErrorCode::QuotaExceeded), "{over}");
    assert_eq!(put(&relay, &ua.url, &write(dir.path(), "a", &a)).0, 201);
    let over = upload_url(&mut alice, &b, 900).await.unwrap_err();
    assert_eq!(over.relay_code(), Some(ErrorCode::QuotaExceeded), "{over}");

    // Each refusal is in the relay's log too, with its reason.
    let logs = relay.logs();
    for code in [
        "bad_blob_id",
        "path_traversal",
        "missing_signature",
        "bad_signature",
        "wrong_method",
        "too_large",
        "hash_mismatch",
    ] {
        assert!(
            logs.contains(&format!("code=\"{code}\"")) || logs.contains(&format!("code={code}")),
            "{code} not logged"
        );
    }
}

#[tokio::test]
async fn bad_upload_requests_are_refused_over_the_session_with_specific_codes() {
    let relay = Relay::start_with(SMALL);
    let mut alice = user(&relay, "alice", ALICE).await;
    let cases: [(RequestUpload, ErrorCode); 4] = [
        (
            RequestUpload {
                sha256: "not-a-hash".into(),
                size: 3,
                segments: vec![],
            },
            ErrorCode::InvalidArgument,
        ),
        (
            RequestUpload {
                sha256: BlobId::of(b"abc").to_string(),
                size: 0,
                segments: vec![],
            },
            ErrorCode::InvalidArgument,
        ),
        (
            RequestUpload {
                sha256: BlobId::of(b"abc").to_string(),
                size: 3,
                segments: vec![1, 1],
            },
            ErrorCode::InvalidArgument,
        ),
        (
            RequestUpload {
                sha256: BlobId::of(b"abc").to_string(),
                size: 3,
                segments: vec![0; 17],
            },
            ErrorCode::InvalidArgument,
        ),
    ];
    for (req, code) in cases {
        let e = ask(&mut alice, client_frame::Body::RequestUpload(req.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.relay_code(), Some(code), "{req:?}: {e}");
    }
    let bad = ask(
        &mut alice,
        client_frame::Body::RequestDownload(RequestDownload {
            blob: "../x".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.relay_code(), Some(ErrorCode::InvalidArgument));

    let off = Relay::start_with("[blobs]\nenabled = false\n");
    let mut carol = user(&off, "carol", ALICE).await;
    let e = upload_url(&mut carol, b"abc", 3).await.unwrap_err();
    assert_eq!(e.relay_code(), Some(ErrorCode::BlobsDisabled), "{e}");
}

#[tokio::test]
async fn an_expired_signature_is_refused_with_its_own_reason() {
    let relay = Relay::start_with("[blobs]\nurl_ttl = \"1s\"\n");
    let mut alice = user(&relay, "alice", ALICE).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f", b"late");
    let up = upload_url(&mut alice, b"late", 4).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        put(&relay, &up.url, &file),
        (403, "signature_expired".into())
    );
}

#[tokio::test]
async fn the_collector_removes_expired_blobs_which_then_answer_gone_and_free_the_quota() {
    let relay = Relay::start_with(
        "[blobs]\nmax_blob_bytes = 1000\naccount_quota_bytes = 1000\nretention = \"1s\"\ngc_interval = \"200ms\"\n",
    );
    let mut alice = user(&relay, "alice", ALICE).await;
    let content = vec![7u8; 1000];
    let id = alice
        .upload_blob(std::slice::from_ref(&content))
        .await
        .unwrap();
    let path = download_url(&mut alice, &id).await;
    let file = blob_file(&relay, &id);
    assert!(file.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "the GC did not remove the expired blob"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&relay, &path),
        (410, "gone".into()),
        "gone differs from never existed"
    );
    // Its bytes left the quota: a new blob of the whole quota fits.
    alice.upload_blob(&[vec![8u8; 1000]]).await.unwrap();
}

fn client(relay: &Relay, home: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("client")
        .arg("--home")
        .arg(relay.dir.path().join(format!("client-{home}")))
        .args([
            "--relay",
            &relay.addr,
            "--http",
            &format!("http://{}", relay.http_addr),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn spawn_client(relay: &Relay, home: &str, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("client")
        .arg("--home")
        .arg(relay.dir.path().join(format!("client-{home}")))
        .args([
            "--relay",
            &relay.addr,
            "--http",
            &format!("http://{}", relay.http_addr),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(
        o.status.success(),
        "client failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A real 1200×900 PNG with a gradient.
fn photo(dir: &Path) -> PathBuf {
    let img = image::RgbImage::from_fn(1200, 900, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let p = dir.join("photo.png");
    img.save(&p).unwrap();
    p
}

fn media_stages(events: &[serde_json::Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "media")
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_thumbnail_then_full(events: &[serde_json::Value]) {
    let stages = media_stages(events);
    assert_eq!(stages.len(), 2, "{events:?}");
    assert_eq!(stages[0].0, "thumbnail");
    assert_eq!(stages[1].0, "full");
    let thumb = std::fs::read(&stages[0].1).unwrap();
    assert_eq!(
        image::guess_format(&thumb).unwrap(),
        image::ImageFormat::Jpeg
    );
    let t = image::load_from_memory(&thumb).unwrap();
    assert_eq!((t.width(), t.height()), (64, 48), "a real small JPEG");
    let full = image::open(&stages[1].1).unwrap();
    assert_eq!((full.width(), full.height()), (1200, 900));
}

#[tokio::test]
async fn an_image_sent_with_the_cli_arrives_as_a_thumbnail_first_then_in_full() {
    let relay = Relay::start();
    drop(user(&relay, "alice", ALICE).await);
    drop(user(&relay, "bob", BOB).await);
    let dir = tempfile::tempdir().unwrap();
    let photo = photo(dir.path());
    let not_image = write(dir.path(), "notes.txt", b"not an image at all");
    let bad = client(
        &relay,
        "alice",
        &["send", BOB, "--image", not_image.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not an image"),
        "{bad:?}"
    );
    let missing = client(
        &relay,
        "alice",
        &["send", BOB, "--image", "no-such-file.jpg"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no-such-file.jpg"),
        "{missing:?}"
    );

    let sent = client(
        &relay,
        "alice",
        &["send", BOB, "--image", photo.to_str().unwrap()],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(String::from_utf8_lossy(&sent.stdout).contains("4 segments"));
    // Bob's session runs over chunked HTTP: media works whatever the transport.
    let got = client(
        &relay,
        "bob",
        &[
            "--transport",
            "http",
            "listen",
            "--json",
            "--count",
            "1",
            "--timeout",
            "30",
        ],
    );
    let events = json_lines(&got);
    assert_eq!(events[0]["event"], "message", "{events:?}");
    assert_thumbnail_then_full(&events);
}

#[tokio::test]
async fn a_purged_image_is_recalled_from_the_sender_and_arrives() {
    let relay = Relay::start_with("[blobs]\nretention = \"4s\"\ngc_interval = \"200ms\"\n");
    drop(user(&relay, "alice", ALICE).await);
    drop(user(&relay, "bob", BOB).await);
    let dir = tempfile::tempdir().unwrap();
    let photo = photo(dir.path());
    let sent = client(
        &relay,
        "alice",
        &["send", BOB, "--image", photo.to_str().unwrap()],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let blob = String::from_utf8_lossy(&sent.stdout)
        .split("blob ")
        .nth(1)
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_hexdigit())
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while blob_file(&relay, &blob).exists() {
        assert!(Instant::now() < deadline, "the GC did not purge the image");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Bob finds it gone and recalls it; Alice's client answers by sending it again.
    let bob = spawn_client(
        &relay,
        "bob",
        &["listen", "--json", "--count", "2", "--timeout", "40"],
    );
    let alice = client(
        &relay,
        "alice",
        &["listen", "--json", "--count", "1", "--timeout", "30"],
    );
    let answered = json_lines(&alice);
    let recall = answered
        .iter()
        .find(|e| e["event"] == "recall_answered")
        .expect("recall answered");
    assert!(recall["resent_as"].is_string(), "{recall}");
    let events = json_lines(&bob.wait_with_output().unwrap());
    let gone = events
        .iter()
        .position(|e| e["event"] == "media_gone")
        .expect("410 seen");
    assert_eq!(events[gone]["recalled"], true);
    let rest = &events[gone..];
    assert_thumbnail_then_full(rest);
    // Saved under the original message's id.
    assert_eq!(
        rest.iter().find(|e| e["event"] == "media").unwrap()["msg_id"],
        events[gone]["msg_id"]
    );
}

#[tokio::test]
async fn history_moves_to_a_linked_device_in_an_encrypted_blob() {
    let relay = Relay::start();
    let mut alice = user(&relay, "alice", ALICE).await;
    let mut bob = user(&relay, "bob", BOB).await;
    alice.send_text(BOB, "a secret history line").await.unwrap();
    bob.send_text(ALICE, "another one").await.unwrap();
    loop {
        if let Event::Message { .. } = next_event(&mut alice).await {
            break;
        }
    }
    let mut laptop = Client::open(&relay.dir.path().join("laptop"), Some(&relay.addr)).unwrap();
    laptop.state.http = Some(relay.http_addr.clone());
    let code = laptop.pairing_code().unwrap();
    let (linked, sent) = tokio::join!(
        laptop.await_link(Duration::from_secs(20)),
        alice.link(&code)
    );
    linked.unwrap();
    assert_eq!(sent.unwrap().1, 2);
    loop {
        match next_event(&mut laptop).await {
            Event::History { entries, .. } => {
                assert_eq!(entries, 2);
                break;
            }
            Event::Undecryptable { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    let bodies: Vec<_> = laptop
        .state
        .history
        .iter()
        .map(|h| h.body.clone())
        .collect();
    assert_eq!(bodies, vec!["a secret history line", "another one"]);
    assert!(
        relay.logs().contains("Blob stored."),
        "history went through a blob"
    );
    // The relay holds only ciphertext.
    assert!(common::files_containing(&relay.data_dir(), b"secret history").is_empty());
}

#[tokio::test]
async fn an_operator_purge_answers_gone_and_the_admin_api_reports_blob_usage() {
    let relay = Relay::start();
    let mut alice = user(&relay, "alice", ALICE).await;
    let content = b"an encrypted photo".to_vec();
    let id = alice
        .upload_blob(std::slice::from_ref(&content))
        .await
        .unwrap();
    let path = download_url(&mut alice, &id).await;
    let admin = |relay: &Relay, args: &[&str]| {
        let url = relay.admin_url();
        let data = relay.data_dir().display().to_string();
        let mut all = vec![
            "admin",
            "--admin",
            url.as_str(),
            "--data-dir",
            data.as_str(),
        ];
        all.extend_from_slice(args);
        relay.cli(&all)
    };

    let (code, out, err) = admin(&relay, &["--json", "blobs", "usage", "--account", ALICE]);
    assert_eq!(code, 0, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage["stored_blobs"], 1, "{usage}");
    assert_eq!(usage["stored_bytes"], content.len(), "{usage}");
    assert_eq!(usage["files_on_disk"], 1, "{usage}");
    assert_eq!(usage["account"]["bytes"], content.len(), "{usage}");
    let (code, metrics, _) = admin(&relay, &["metrics"]);
    assert_eq!(code, 0);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("relaybox_blobs ") && l.ends_with(" 1")),
        "{metrics}"
    );

    // Bad input: not an id, an unknown id, an unknown account.
    let (code, _, err) = admin(&relay, &["blobs", "purge", "../../relay.key"]);
    assert_eq!(code, 1);
    assert!(err.contains("id"), "{err}");
    let unknown = "0".repeat(64);
    let (code, _, err) = admin(&relay, &["blobs", "purge", &unknown]);
    assert_eq!(code, 1);
    assert!(err.contains("no stored blob"), "{err}");
    let (code, _, err) = admin(&relay, &["blobs", "usage", "--account", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("account"), "{err}");

    let (code, out, err) = admin(&relay, &["blobs", "purge", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("410"), "{out}");
    assert!(!blob_file(&relay, &id).exists());
    assert_eq!(get(&relay, &path), (410, "gone".into()));
    let audit = std::fs::read_to_string(relay.data_dir().join("audit.log")).unwrap();
    assert!(audit.contains(&id), "the purge is audited:\n{audit}");
    let (code, _, err) = admin(&relay, &["blobs", "purge", &id]);
    assert_eq!(code, 1, "a second purge finds nothing stored: {err}");
}
