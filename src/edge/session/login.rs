//! The handshake phase of a session: reads the first frames, runs XX or IK, checks the login
//! (device key, resumption token) and answers with a `LoginResult`.

use std::sync::Arc;

use rand::RngCore;

use super::{Auth, FrameIo, SessionError};
use crate::edge::RelayCtx;
use crate::ids::{AccountId, DeviceId};
use crate::wire::handshake::{accept, refusal, Accepted, Transport};
use crate::wire::messages::{
    login, login_result, DeviceLogin, Error, ErrorCode, Login, LoginOk, LoginResult,
};
use crate::wire::token::TokenClaims;

/// Runs the handshake; on success returns the transport and who the peer is.
pub(super) async fn handshake<T: FrameIo>(
    ctx: &Arc<RelayCtx>,
    io: &mut T,
) -> Result<(Transport, Auth), SessionError> {
    let first = match io.read_frame().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(SessionError::Closed),
        Err(SessionError::Protocol(e)) => {
            let reason = format!("not a relaybox handshake: {e}");
            let _ = io.write_frame(&refusal(e.code(), &reason)).await;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    match accept(&ctx.identity, &first) {
        Err(e) => {
            let _ = io.write_frame(&refusal(e.code(), &e.to_string())).await;
            Err(e.into())
        }
        Ok(Accepted::Xx { state, reply }) => counted("XX", xx(ctx, io, state, reply).await),
        Ok(Accepted::Ik(ik)) => {
            let outcome = authorize(ctx, &ik.login, ik.client_static, true);
            let answered = match ik.respond(&login_result(&outcome)) {
                Ok((transport, reply)) => io.write_frame(&reply).await.map(|()| transport),
                Err(e) => Err(e.into()),
            };
            let done = answered.and_then(|transport| {
                outcome
                    .map(|(auth, _)| (transport, auth))
                    .map_err(SessionError::LoginRefused)
            });
            counted("IK", done)
        }
    }
}

/// The rest of an XX handshake after its first reply: message 3 carries the login.
async fn xx<T: FrameIo>(
    ctx: &Arc<RelayCtx>,
    io: &mut T,
    state: crate::wire::handshake::RelayXx,
    reply: Vec<u8>,
) -> Result<(Transport, Auth), SessionError> {
    io.write_frame(&reply).await?;
    let msg3 = io.read_frame().await?.ok_or(SessionError::Closed)?;
    let (mut transport, login, client_static) = match state.finish(&msg3) {
        Ok(done) => done,
        Err(e) => {
            // No transport exists yet: the refusal goes in plaintext, as on the first reply.
            let reason = format!("XX message 3 could not be read: {e}");
            let _ = io
                .write_frame(&refusal(ErrorCode::HandshakeFailed, &reason))
                .await;
            return Err(e.into());
        }
    };
    let login = match login {
        Ok(login) => login,
        Err(e) => {
            let refused = Error::new(
                ErrorCode::Malformed,
                format!("XX message 3 must carry a Login: {e}"),
            );
            let result = login_result(&Err(refused.clone()));
            io.write_frame(&transport.encrypt(&result)?).await?;
            return Err(SessionError::LoginRefused(refused));
        }
    };
    let outcome = authorize(ctx, &login, client_static, false);
    let result = login_result(&outcome);
    io.write_frame(&transport.encrypt(&result)?).await?;
    outcome
        .map(|(auth, _)| (transport, auth))
        .map_err(SessionError::LoginRefused)
}

/// Counts a finished handshake by pattern and outcome, and passes its result on.
fn counted<T>(pattern: &'static str, result: Result<T, SessionError>) -> Result<T, SessionError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(SessionError::LoginRefused(_)) => "refused",
        Err(_) => "failed",
    };
    crate::telemetry::metrics::handshake(pattern, outcome);
    result
}

fn login_result(outcome: &Result<(Auth, Vec<u8>), Error>) -> LoginResult {
    let result = match outcome {
        Ok((auth, token)) => login_result::Result::Ok(LoginOk {
            token: token.clone(),
            server_time_ms: crate::clock::now_ms(),
            account: match auth {
                Auth::Device(d) => d.account.to_string(),
                Auth::Anonymous { .. } => String::new(),
            },
            device: match auth {
                Auth::Device(d) => d.device,
                Auth::Anonymous { .. } => 0,
            },
            relay_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: u32::from(crate::wire::handshake::VERSION),
        }),
        Err(e) => login_result::Result::Error(e.clone()),
    };
    LoginResult {
        result: Some(result),
    }
}

/// Decides who the peer is. For a device login, the Noise static key must be the device's
/// registered key, and over IK the single-use token must be valid; a new token is issued.
fn authorize(
    ctx: &RelayCtx,
    login: &Login,
    client_static: [u8; 32],
    ik: bool,
) -> Result<(Auth, Vec<u8>), Error> {
    match &login.kind {
        Some(login::Kind::Register(_)) if !ik => {
            Ok((Auth::Anonymous { client_static }, Vec::new()))
        }
        Some(login::Kind::Register(_)) => Err(Error::new(
            ErrorCode::InvalidArgument,
            "register over IK is not allowed; use XX",
        )),
        Some(login::Kind::Device(dl)) => {
            let device = check_device(ctx, dl, client_static)?;
            let token = if ik {
                let presented =
                    ctx.tokens
                        .open(&dl.token, crate::clock::now_ms())
                        .map_err(|e| {
                            Error::new(ErrorCode::TokenInvalid, format!("{e}; reconnect with XX"))
                        })?;
                if presented.account != device.account.as_str() || presented.device != device.device
                {
                    return Err(Error::new(
                        ErrorCode::TokenInvalid,
                        "token belongs to another device; reconnect with XX",
                    ));
                }
                rotate_token(ctx, &device, Some(presented.id))?
            } else {
                rotate_token(ctx, &device, None)?
            };
            Ok((Auth::Device(device), token))
        }
        Some(login::Kind::Companion(c)) => {
            let not_linked = || {
                Error::new(
                    ErrorCode::UnknownDevice,
                    "this key is not linked to an account (yet); link it from the primary",
                )
            };
            let device = match ctx.store.device_by_key(&client_static) {
                Ok(Some(d)) => d,
                Ok(None) => return Err(not_linked()),
                Err(e) => {
                    tracing::error!(error = %e, "Looking up a companion key failed.");
                    return Err(Error::new(ErrorCode::Internal, "internal error"));
                }
            };
            match ctx.store.check_link_secret(&device, &c.secret) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::new(
                        ErrorCode::UnknownDevice,
                        "the pairing secret does not match",
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "Checking a link secret failed.");
                    return Err(Error::new(ErrorCode::Internal, "internal error"));
                }
            }
            let token = rotate_token(ctx, &device, None)?;
            Ok((Auth::Device(device), token))
        }
        None => Err(Error::new(ErrorCode::Malformed, "login has no kind")),
    }
}

fn check_device(
    ctx: &RelayCtx,
    dl: &DeviceLogin,
    client_static: [u8; 32],
) -> Result<DeviceId, Error> {
    let unknown = || {
        Error::new(
            ErrorCode::UnknownDevice,
            "this device key is not registered for that account and device",
        )
    };
    let account = AccountId::parse(&dl.account).map_err(|_| unknown())?;
    let device = DeviceId::new(account, dl.device);
    match ctx.store.device(&device) {
        Ok(Some(rec)) if rec.noise_static == client_static => Ok(device),
        Ok(_) => Err(unknown()),
        Err(e) => {
            tracing::error!(error = %e, "Reading a device record failed during login.");
            Err(Error::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Issues a new token for `device`. With `presented`, only if that id is still the valid one
/// (single use: a replayed handshake loses this race and is refused).
pub(super) fn rotate_token(
    ctx: &RelayCtx,
    device: &DeviceId,
    presented: Option<u64>,
) -> Result<Vec<u8>, Error> {
    let next = rand::thread_rng().next_u64();
    let stored = match presented {
        Some(old) => ctx.store.token_swap(device, old, next),
        None => ctx.store.token_set(device, next).map(|()| true),
    };
    match stored {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::new(
                ErrorCode::TokenInvalid,
                "token already used; reconnect with XX",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "Storing a token id failed.");
            return Err(Error::new(ErrorCode::Internal, "internal error"));
        }
    }
    let ttl = u64::try_from(ctx.cfg.sessions.token_ttl.as_millis()).unwrap_or(u64::MAX);
    let claims = TokenClaims {
        account: device.account.to_string(),
        device: device.device,
        id: next,
        expires_at_ms: crate::clock::now_ms().saturating_add(ttl),
    };
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    Ok(ctx.tokens.seal(&claims, nonce))
}
