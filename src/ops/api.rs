//! The HTTP side of the operator commands: base URL, token, and the mapping from what
//! happened on the wire to an exit code.

use std::path::Path;
use std::time::Duration;

use super::{ApiArgs, Failure, EXIT_UNAVAILABLE};
use crate::config::Config;

/// Deadline for an ordinary admin request (a backup has none: it may be large).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable that may hold the token instead of a file.
pub const TOKEN_ENV: &str = "RELAYBOX_ADMIN_TOKEN";

/// A connection to the admin API.
pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    /// Resolves the URL and (if `with_token`) the token from flags, env and config.
    pub fn new(args: &ApiArgs, cfg: &Config, with_token: bool) -> Result<Self, Failure> {
        let base = match &args.admin_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", cfg.listen.admin),
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "--admin must be an http:// URL, got {base:?}"
            )));
        }
        let token = if with_token {
            Some(token(args, cfg)?)
        } else {
            None
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Self { base, token, agent })
    }

    /// Sends a request; `timeout` `None` means no deadline (a backup download).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(())
            .map_err(|e| Failure::usage(format!("bad request URL {url}: {e}")))?;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(timeout)
            .build();
        self.agent.run(req).map_err(|e| unavailable(&self.base, e))
    }

    /// GET or DELETE with the usual deadline, answering the JSON body of a 2xx response.
    pub fn json(&self, method: &str, path: &str) -> Result<serde_json::Value, Failure> {
        let res = self.call(method, path, Some(REQUEST_TIMEOUT))?;
        let status = res.status();
        let body = res
            .into_body()
            .read_to_string()
            .map_err(|e| Failure::api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &body));
        }
        serde_json::from_str(&body)
            .map_err(|e| Failure::api(format!("the answer is not JSON ({e}): {body}")))
    }

    /// POST of a JSON body with the usual deadline, answering the JSON body of a 2xx response.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Failure> {
        self.send_json("POST", path, body)
    }

    /// POST, PUT or PATCH of a JSON body, as [`Api::post_json`].
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "PUT" => self.agent.put(&url),
            "PATCH" => self.agent.patch(&url),
            _ => self.agent.post(&url),
        };
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let res = req
            .config()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .send_json(body)
            .map_err(|e| unavailable(&self.base, e))?;
        let status = res.status();
        let text = res
            .into_body()
            .read_to_string()
            .map_err(|e| Failure::api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &text));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::api(format!("the answer is not JSON ({e}): {text}")))
    }

    /// GET with the usual deadline, answering the text body whatever the status.
    pub fn text(&self, path: &str) -> Result<(u16, String), Failure> {
        let res = self.call("GET", path, Some(REQUEST_TIMEOUT))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .read_to_string()
            .map_err(|e| Failure::api(format!("reading the answer: {e}")))?;
        Ok((status, body))
    }
}

/// The API's error message from a non-2xx answer.
pub fn api_error(status: u16, body: &str) -> Failure {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    Failure::api(format!("{message} (HTTP {status})"))
}

fn unavailable(base: &str, e: ureq::Error) -> Failure {
    let down = match &e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::NotFound
        ),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        _ => false,
    };
    if down {
        Failure {
            code: EXIT_UNAVAILABLE,
            message: format!("the relay is not running (nothing answers at {base}): {e}"),
        }
    } else {
        Failure {
            code: EXIT_UNAVAILABLE,
            message: format!("cannot reach the admin API at {base}: {e}"),
        }
    }
}

/// The token: `--token-file`, else `RELAYBOX_ADMIN_TOKEN`, else `<data_dir>/admin.token`.
fn token(args: &ApiArgs, cfg: &Config) -> Result<String, Failure> {
    if args.token_file.is_none() {
        if let Ok(t) = std::env::var(TOKEN_ENV) {
            if !t.trim().is_empty() {
                return Ok(t.trim().to_owned());
            }
        }
    }
    let path = match &args.token_file {
        Some(p) => p.clone(),
        None => args
            .data_dir
            .as_deref()
            .unwrap_or(&cfg.relay.data_dir)
            .join(crate::edge::admin::token::TOKEN_FILE),
    };
    read_token(&path)
}

fn read_token(path: &Path) -> Result<String, Failure> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        Ok(_) => Err(Failure::usage(format!("{} is empty", path.display()))),
        Err(e) => Err(Failure::usage(format!(
            "cannot read the admin token from {} ({e}); pass --token-file, set {TOKEN_ENV}, or --data-dir",
            path.display()
        ))),
    }
}
