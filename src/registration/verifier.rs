//! Verifiers: how a verification code leaves the relay.
//!
//! Owns delivery of one code to one number through the operator's chosen channel, bounded by a
//! timeout. Does not own the code (`codes`), retries (the person asks again; the rate limiter
//! bounds that) nor configuration parsing (`config` builds a [`Verifier`]).
//!
//! - `log`: writes the code to the relay's log. Development only.
//! - `command`: runs a program (a GSM modem tool, an SMS gateway script), never through a shell.
//! - `webhook`: POSTs JSON to the operator's SMS gateway.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ids::AccountId;

/// Bytes of a failed command's stderr kept in [`VerifierError::CommandFailed`]; the rest is
/// read and dropped so the program never blocks on a full pipe.
pub const STDERR_HEAD_BYTES: usize = 200;

/// Placeholder in a command argument replaced by the E.164 number.
pub const PHONE_PLACEHOLDER: &str = "{phone}";
/// Placeholder in a command argument replaced by the code.
pub const CODE_PLACEHOLDER: &str = "{code}";

/// How codes are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verifier {
    /// Log the code at INFO. Anyone who can read the log can register any number.
    Log,
    /// Run `argv[0]` with `argv[1..]`, each with [`PHONE_PLACEHOLDER`] and [`CODE_PLACEHOLDER`]
    /// substituted; the environment also carries `RELAYBOX_PHONE` and `RELAYBOX_CODE`.
    /// Exit status 0 means sent.
    Command { argv: Vec<String> },
    /// POST `{"phone": "+14155550100", "code": "123456"}` as JSON to `url`; a 2xx answer means
    /// sent. Redirects are not followed (a 3xx is an error).
    Webhook { url: String },
}

/// Why a code could not be sent. The person can ask again; the operator should look at the
/// log. No variant carries the code itself (a program's stderr might, if it prints it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// The command verifier has an empty `argv`. (Operator's fault: config.)
    #[error("command verifier has an empty argv")]
    EmptyCommand,
    /// The program could not be started: not found, not executable… (Operator's fault.)
    #[error("cannot start verifier command {program:?}: {source}")]
    CommandSpawn { program: String, source: io::Error },
    /// The program ran and reported failure. (The operator's program or its gateway.)
    #[error("verifier command failed with {status}; stderr: {stderr:?}")]
    CommandFailed {
        status: ExitStatus,
        /// The first [`STDERR_HEAD_BYTES`] of its stderr, lossily decoded.
        stderr: String,
    },
    /// The program did not finish in time and was killed. (The operator's program or its
    /// gateway.)
    #[error("verifier command did not finish within {after:?} and was killed")]
    CommandTimedOut { after: Duration },
    /// Waiting for the program or reading its stderr failed. (The relay's host.)
    #[error("waiting for the verifier command failed: {0}")]
    CommandIo(#[source] io::Error),
    /// The gateway answered with a status other than 2xx. (The gateway, or its URL in config.)
    #[error("verifier webhook answered HTTP {status}")]
    WebhookStatus { status: u16 },
    /// The gateway did not answer in time. (The gateway or the network.)
    #[error("verifier webhook did not answer within {after:?}")]
    WebhookTimedOut { after: Duration },
    /// The request could not be made: bad URL, DNS, connection refused, TLS… (The gateway, the
    /// network, or the URL in config.)
    #[error("verifier webhook request failed: {0}")]
    WebhookTransport(#[source] Box<ureq::Error>),
    /// The blocking task that ran the request panicked or was cancelled. (The relay's fault.)
    #[error("verifier webhook task failed: {0}")]
    WebhookTask(#[source] tokio::task::JoinError),
}

impl Verifier {
    /// Sends `code` to `phone`, giving up after `timeout`.
    pub async fn send(
        &self,
        phone: &AccountId,
        code: &str,
        timeout: Duration,
    ) -> Result<(), VerifierError> {
        match self {
            Verifier::Log => {
                tracing::info!(
                    phone = %phone,
                    code = %code,
                    "Verification code issued (log verifier; development only)."
                );
                Ok(())
            }
            Verifier::Command { argv } => run_command(argv, phone, code, timeout).await,
            Verifier::Webhook { url } => post_webhook(url, phone, code, timeout).await,
        }
    }
}

async fn run_command(
    argv: &[String],
    phone: &AccountId,
    code: &str,
    timeout: Duration,
) -> Result<(), VerifierError> {
    let (program, args) = argv.split_first().ok_or(VerifierError::EmptyCommand)?;
    // The phone is `+` and digits, so it cannot contain a placeholder that the second
    // replacement would then expand.
    let args = args.iter().map(|arg| {
        arg.replace(PHONE_PLACEHOLDER, phone.as_str())
            .replace(CODE_PLACEHOLDER, code)
    });
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("RELAYBOX_PHONE", phone.as_str())
        .env("RELAYBOX_CODE", code)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Belt and braces: should this future be dropped, the program does not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| VerifierError::CommandSpawn {
            program: program.clone(),
            source,
        })?;
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout(timeout, async {
        tokio::try_join!(child.wait(), read_head(stderr, STDERR_HEAD_BYTES))
    })
    .await;
    match finished {
        Ok(Ok((status, _))) if status.success() => Ok(()),
        Ok(Ok((status, head))) => Err(VerifierError::CommandFailed {
            status,
            stderr: String::from_utf8_lossy(&head).into_owned(),
        }),
        Ok(Err(e)) => Err(VerifierError::CommandIo(e)),
        Err(_elapsed) => {
            // Kills and reaps the program. An error here means it already exited, which is
            // fine: it was still too late.
            let _ = child.kill().await;
            Err(VerifierError::CommandTimedOut { after: timeout })
        }
    }
}

/// Reads the first `limit` bytes of `pipe`, then drains the rest so the writer never blocks.
async fn read_head(pipe: Option<impl AsyncRead + Unpin>, limit: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(limit);
    if let Some(mut pipe) = pipe {
        // usize → u64 never truncates on supported targets; saturate anyway.
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        (&mut pipe).take(limit).read_to_end(&mut head).await?;
        tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
    }
    Ok(head)
}

#[derive(serde::Serialize)]
struct WebhookBody {
    phone: String,
    code: String,
}

async fn post_webhook(
    url: &str,
    phone: &AccountId,
    code: &str,
    timeout: Duration,
) -> Result<(), VerifierError> {
    let url = url.to_owned();
    let body = WebhookBody {
        phone: phone.as_str().to_owned(),
        code: code.to_owned(),
    };
    // ureq is blocking; its global timeout bounds the whole request (resolve, connect, send,
    // answer), so the blocking thread is released in time too.
    let status = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        agent
            .post(&url)
            .send_json(&body)
            .map(|answer| answer.status().as_u16())
    })
    .await
    .map_err(VerifierError::WebhookTask)?
    .map_err(|e| match e {
        ureq::Error::Timeout(_) => VerifierError::WebhookTimedOut { after: timeout },
        other => VerifierError::WebhookTransport(Box::new(other)),
    })?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(VerifierError::WebhookStatus { status })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
#[path = "verifier_tests.rs"]
mod tests;
