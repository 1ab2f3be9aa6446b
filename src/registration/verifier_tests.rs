//! Verifier tests against real programs and a real (tiny) HTTP server on 127.0.0.1:0.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn phone() -> AccountId {
    AccountId::parse("+14155550100").unwrap()
}

fn command(argv: &[&str]) -> Verifier {
    Verifier::Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn the_log_verifier_always_succeeds() {
    Verifier::Log
        .send(&phone(), "123456", SECOND)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_command_verifier_passes_phone_and_code_in_env_and_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sent");
    let script = r#"printf '%s %s|%s' "$RELAYBOX_PHONE" "$RELAYBOX_CODE" "$2" > "$1""#;
    let out_arg = out.to_str().unwrap();
    let verifier = command(&["sh", "-c", script, "sh", out_arg, "to={phone} code={code}"]);
    verifier.send(&phone(), "123456", 5 * SECOND).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "+14155550100 123456|to=+14155550100 code=123456"
    );
}

#[tokio::test]
async fn the_command_is_not_run_through_a_shell() {
    // A shell would expand `$HOME` and run the `;`; exec'd directly, echo prints it verbatim.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("argv");
    let script = r#"printf '%s' "$2" > "$1""#;
    let out_arg = out.to_str().unwrap();
    let verifier = command(&["sh", "-c", script, "sh", out_arg, "$HOME; touch pwned"]);
    verifier.send(&phone(), "123456", 5 * SECOND).await.unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "$HOME; touch pwned");
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_status_and_stderr() {
    let verifier = command(&["sh", "-c", "echo 'gateway down' >&2; exit 3"]);
    let err = verifier
        .send(&phone(), "123456", 5 * SECOND)
        .await
        .unwrap_err();
    match err {
        VerifierError::CommandFailed { status, stderr } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "gateway down\n");
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn only_the_head_of_a_long_stderr_is_kept_and_the_program_is_not_blocked() {
    // 1 MB of stderr: more than a pipe buffer, so the program would block if it were not
    // drained.
    let script = "head -c 1000000 /dev/zero | tr '\\0' x >&2; exit 1";
    let verifier = command(&["sh", "-c", script]);
    let err = verifier
        .send(&phone(), "123456", 5 * SECOND)
        .await
        .unwrap_err();
    match err {
        VerifierError::CommandFailed { stderr, .. } => {
            assert_eq!(stderr, "x".repeat(STDERR_HEAD_BYTES));
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_at_the_timeout() {
    let started = Instant::now();
    let timeout = Duration::from_millis(200);
    let err = command(&["sleep", "5"])
        .send(&phone(), "123456", timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifierError::CommandTimedOut { after } if after == timeout),
        "{err:?}"
    );
    assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_missing_program_or_empty_argv_is_the_operators_error() {
    let err = command(&["relaybox-no-such-program"])
        .send(&phone(), "123456", SECOND)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VerifierError::CommandSpawn { program, .. } if program == "relaybox-no-such-program"),
        "{err:?}"
    );
    let err = command(&[])
        .send(&phone(), "123456", SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifierError::EmptyCommand), "{err:?}");
}

/// A one-request HTTP server: answers `status` and yields the request head and body.
async fn one_shot_server(status: u16) -> (String, JoinHandle<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the end of the head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length header");
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the end of the body");
            body.extend_from_slice(&chunk[..n]);
        }
        let answer =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        sock.write_all(answer.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        (head, body)
    });
    (url, task)
}

#[tokio::test]
async fn the_webhook_verifier_posts_phone_and_code_as_json() {
    let (url, server) = one_shot_server(200).await;
    Verifier::Webhook { url }
        .send(&phone(), "123456", 5 * SECOND)
        .await
        .unwrap();
    let (head, body) = server.await.unwrap();
    assert!(head.starts_with("POST /sms HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "phone": "+14155550100", "code": "123456" })
    );
}

#[tokio::test]
async fn a_webhook_answering_500_is_an_error_with_the_status() {
    let (url, server) = one_shot_server(500).await;
    let err = Verifier::Webhook { url }
        .send(&phone(), "123456", 5 * SECOND)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifierError::WebhookStatus { status: 500 }),
        "{err:?}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_webhook_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    // Accepts and holds the connection without ever answering.
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(sock);
    });
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = Verifier::Webhook { url }
        .send(&phone(), "123456", timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifierError::WebhookTimedOut { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
    server.abort();
}

#[tokio::test]
async fn an_unreachable_webhook_is_a_transport_error() {
    // Bind then drop: the port is (almost certainly) closed now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Verifier::Webhook {
        url: format!("http://{addr}/sms"),
    }
    .send(&phone(), "123456", SECOND)
    .await
    .unwrap_err();
    assert!(matches!(err, VerifierError::WebhookTransport(_)), "{err:?}");
}
