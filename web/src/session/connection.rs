//! The connection's life: the handshake (IK with the pinned key and token, else XX as the
//! linked device or with the pairing secret), the login result, the relay's refusals, and
//! what each WebSocket message from the relay does before the session is ready and after.

use relaybox_core::wire::handshake::{self, ClientIk, ClientXx, Crypto, Transport};
use relaybox_core::wire::messages::{
    login, login_result, CompanionLogin, DeviceLogin, Error, ErrorCode, Login, LoginOk,
    LoginResult, ServerFrame,
};
use relaybox_core::wire::ProtocolError;

use super::{Companion, Conn, Event, WebError};

impl Companion {
    /// Starts a connection; returns the first WebSocket message. IK when a token and a pinned
    /// relay key are held, else XX (as the linked device, or with the pairing secret).
    pub fn connect(&mut self) -> Result<Vec<u8>, WebError> {
        self.on_close();
        if let (Some(account), Some(token), Some(relay_key), false) = (
            self.account.clone(),
            self.token.clone(),
            self.relay_key,
            self.force_xx,
        ) {
            let login = device_login(&account, self.device, token);
            let (state, first) =
                ClientIk::start_using(&self.noise, &relay_key, &login, Crypto::Portable)?;
            self.conn = Conn::IkSent { state };
            return Ok(first);
        }
        self.force_xx = false;
        let login = match (&self.account, &self.link_secret) {
            (Some(account), _) => device_login(account, self.device, Vec::new()),
            (None, secret) => Login {
                kind: Some(login::Kind::Companion(CompanionLogin {
                    secret: secret.clone().unwrap_or_default(),
                })),
            },
        };
        let (state, first) = ClientXx::start_using(&self.noise, Crypto::Portable)?;
        self.conn = Conn::XxSent { state, login };
        Ok(first)
    }

    /// The WebSocket closed: requests in flight are forgotten (their messages stay in the
    /// outbox and go again, with the same ids, after the next login).
    pub fn on_close(&mut self) {
        self.conn = Conn::Closed;
        self.pending.clear();
        self.claimed.clear();
        self.unacked.clear();
        self.out.clear();
    }

    /// One WebSocket message from the relay.
    pub fn on_message(&mut self, bytes: &[u8]) {
        match std::mem::replace(&mut self.conn, Conn::Closed) {
            Conn::Closed => self.events.push(Event::BadFrame {
                error: "a message arrived on a closed session".into(),
            }),
            Conn::XxSent { state, login } => match state.finish(bytes, &login) {
                Ok((transport, msg3, relay_key)) => {
                    self.out.push_back(msg3);
                    self.conn = Conn::XxResult {
                        transport,
                        relay_key,
                    };
                }
                Err(e) => self.refused(e),
            },
            Conn::XxResult {
                mut transport,
                relay_key,
            } => match transport.decrypt::<LoginResult>(bytes, "LoginResult") {
                Ok(result) => self.login_result(transport, result, relay_key, false),
                Err(e) => self.refused(handshake::as_refusal(bytes).unwrap_or(e)),
            },
            Conn::IkSent { state } => match state.finish(bytes) {
                Ok((transport, result)) => {
                    let relay_key = self.relay_key.unwrap_or_default();
                    self.login_result(transport, result, relay_key, true);
                }
                Err(e) => {
                    let fallback = matches!(
                        &e,
                        ProtocolError::Refused {
                            code: ErrorCode::TokenInvalid | ErrorCode::HandshakeFailed,
                            ..
                        } | ProtocolError::Noise(_)
                    );
                    if fallback {
                        self.force_xx = true;
                        self.events.push(Event::Reconnect);
                    } else {
                        self.refused(e);
                    }
                }
            },
            Conn::Ready { mut transport } => {
                let frame = transport.decrypt::<ServerFrame>(bytes, "ServerFrame");
                self.conn = Conn::Ready { transport };
                match frame {
                    Ok(f) => self.frame(f),
                    Err(e) => self.events.push(Event::BadFrame {
                        error: e.to_string(),
                    }),
                }
                self.flush_acks();
            }
        }
    }

    /// A handshake failure: the relay's refusal, or bytes that did not fit the handshake.
    fn refused(&mut self, e: ProtocolError) {
        match e {
            ProtocolError::Refused {
                code: ErrorCode::UnknownDevice,
                ..
            } if self.account.is_none() => self.events.push(Event::WaitingForLink),
            ProtocolError::Refused {
                code: ErrorCode::UnknownDevice,
                reason,
            } => self.logged_out(format!("this browser was unlinked ({reason})")),
            ProtocolError::Refused { code, reason } => self.events.push(Event::RelayError {
                code: code.as_str_name().to_owned(),
                message: reason,
                retry_after_ms: 0,
            }),
            other => self.events.push(Event::BadFrame {
                error: format!("handshake: {other}"),
            }),
        }
    }

    fn login_result(
        &mut self,
        transport: Transport,
        result: LoginResult,
        relay_key: [u8; 32],
        resumed: bool,
    ) {
        let ok: LoginOk = match result.result {
            Some(login_result::Result::Ok(ok)) => ok,
            Some(login_result::Result::Error(e))
                if resumed && e.code() == ErrorCode::TokenInvalid =>
            {
                self.force_xx = true;
                self.events.push(Event::Reconnect);
                return;
            }
            Some(login_result::Result::Error(e)) => return self.relay_error(e),
            None => {
                return self.events.push(Event::BadFrame {
                    error: "an empty login result".into(),
                })
            }
        };
        self.conn = Conn::Ready { transport };
        self.token = Some(ok.token);
        self.relay_key = Some(relay_key);
        if self.account.is_none() {
            self.account = Some(ok.account.clone());
            self.device = ok.device;
            self.link_secret = None;
            self.events.push(Event::Linked {
                account: ok.account,
                device: ok.device,
            });
        }
        self.events.push(Event::Ready {
            account: self.account.clone().unwrap_or_default(),
            device: self.device,
            resumed,
        });
        if !self.keys_published {
            self.upload_keys();
        }
        for msg_id in self.outbox.iter().map(|o| o.msg_id).collect::<Vec<_>>() {
            self.start_send(msg_id);
        }
    }

    pub(super) fn relay_error(&mut self, e: Error) {
        if e.code() == ErrorCode::UnknownDevice {
            if self.account.is_none() {
                return self.events.push(Event::WaitingForLink);
            }
            return self.logged_out(format!("this browser was unlinked ({})", e.message));
        }
        self.events.push(Event::RelayError {
            code: e.code().as_str_name().to_owned(),
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        });
    }

    /// Forgets the account: the page then deletes its stored state.
    pub(super) fn logged_out(&mut self, reason: String) {
        self.account = None;
        self.token = None;
        self.events.push(Event::LoggedOut { reason });
    }
}

fn device_login(account: &str, device: u32, token: Vec<u8>) -> Login {
    Login {
        kind: Some(login::Kind::Device(DeviceLogin {
            account: account.to_owned(),
            device,
            token,
        })),
    }
}
