//! Noise conformance: the relay's own resolver (`wire::handshake::resolver`) reproduces the
//! published test vectors for the two protocol names relaybox speaks, message by message and
//! down to the handshake hash. The vectors are vendored in `tests/vectors/noise.json` (see the
//! README beside it). Interoperability with an independent implementation is checked by
//! `tests/noise_interop.rs`.

use anyhow::{anyhow, Context, Result};
use relaybox::wire::handshake::{resolver, IK_PARAMS, XX_PARAMS};
use serde_json::Value;
use snow::{Builder, HandshakeState};

const VECTORS: &str = include_str!("vectors/noise.json");

fn hex_field(v: &Value, name: &str) -> Result<Option<Vec<u8>>> {
    match v.get(name).and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => Ok(Some(
            hex::decode(s).with_context(|| format!("field {name}"))?,
        )),
    }
}

fn build(v: &Value, side: &str, initiator: bool) -> Result<HandshakeState> {
    let name = v["protocol_name"]
        .as_str()
        .ok_or(anyhow!("no protocol_name"))?;
    let prologue = hex_field(v, &format!("{side}_prologue"))?.unwrap_or_default();
    let ephemeral = hex_field(v, &format!("{side}_ephemeral"))?.ok_or(anyhow!("no ephemeral"))?;
    let local = hex_field(v, &format!("{side}_static"))?;
    let remote = hex_field(v, &format!("{side}_remote_static"))?;
    let mut b = Builder::with_resolver(name.parse()?, Box::new(resolver()))
        .prologue(&prologue)?
        .fixed_ephemeral_key_for_testing_only(&ephemeral);
    if let Some(k) = &local {
        b = b.local_private_key(k)?;
    }
    if let Some(k) = &remote {
        b = b.remote_public_key(k)?;
    }
    Ok(if initiator {
        b.build_initiator()?
    } else {
        b.build_responder()?
    })
}

/// Plays one vector: both sides, every message, each direction checked byte for byte.
fn play(v: &Value) -> Result<usize> {
    let mut handshake = Some((build(v, "init", true)?, build(v, "resp", false)?));
    let mut transport = None;
    let messages = v["messages"].as_array().ok_or(anyhow!("no messages"))?;
    let mut buf = vec![0u8; 65_535];
    let mut plain = vec![0u8; 65_535];
    for (i, m) in messages.iter().enumerate() {
        let payload = hex_field(m, "payload")?.ok_or(anyhow!("no payload"))?;
        let expected = hex_field(m, "ciphertext")?.ok_or(anyhow!("no ciphertext"))?;
        let initiator_sends = i % 2 == 0;
        let (n, got) = if let Some((init, resp)) = handshake.as_mut() {
            let (w, r) = if initiator_sends {
                (init, resp)
            } else {
                (resp, init)
            };
            let n = w.write_message(&payload, &mut buf)?;
            (n, r.read_message(&buf[..n], &mut plain)?)
        } else {
            let (it, rt) = transport.as_mut().ok_or(anyhow!("no transport"))?;
            let (w, r): (&mut snow::TransportState, &mut snow::TransportState) =
                if initiator_sends { (it, rt) } else { (rt, it) };
            let n = w.write_message(&payload, &mut buf)?;
            (n, r.read_message(&buf[..n], &mut plain)?)
        };
        if buf[..n] != expected[..] {
            return Err(anyhow!("message {i}: ciphertext differs"));
        }
        if plain[..got] != payload[..] {
            return Err(anyhow!("message {i}: payload differs"));
        }
        let finished = handshake
            .as_ref()
            .is_some_and(|(a, b)| a.is_handshake_finished() && b.is_handshake_finished());
        // Only once both sides finished: `take` ends the handshake phase.
        if let Some((init, resp)) = handshake.take_if(|_| finished) {
            if let Some(hash) = hex_field(v, "handshake_hash")? {
                if init.get_handshake_hash() != hash.as_slice()
                    || resp.get_handshake_hash() != hash.as_slice()
                {
                    return Err(anyhow!("handshake hash differs"));
                }
            }
            transport = Some((init.into_transport_mode()?, resp.into_transport_mode()?));
        }
    }
    if transport.is_none() {
        return Err(anyhow!("the handshake never finished"));
    }
    Ok(messages.len())
}

#[test]
fn the_relay_resolver_reproduces_every_vector_for_our_protocol_names() -> Result<()> {
    let doc: Value = serde_json::from_str(VECTORS)?;
    let vectors = doc["vectors"].as_array().ok_or(anyhow!("no vectors"))?;
    let mut seen = Vec::new();
    for v in vectors {
        let name = v["protocol_name"].as_str().unwrap_or_default().to_owned();
        let source = v["source"].as_str().unwrap_or_default().to_owned();
        let n = play(v).with_context(|| format!("{name} ({source})"))?;
        assert!(
            n >= 3,
            "{name} ({source}) has too few messages to reach transport mode"
        );
        seen.push(name);
    }
    // Both names, from both sources.
    for name in [XX_PARAMS, IK_PARAMS] {
        assert_eq!(seen.iter().filter(|s| *s == name).count(), 2, "{name}");
    }
    Ok(())
}

#[test]
fn a_single_flipped_ciphertext_bit_fails_the_vector() -> Result<()> {
    // Guards the test itself: a corrupted expectation must be caught.
    let mut doc: Value = serde_json::from_str(VECTORS)?;
    let v = &mut doc["vectors"][0];
    let ct = v["messages"][0]["ciphertext"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut bytes = hex::decode(ct)?;
    if let Some(b) = bytes.last_mut() {
        *b ^= 1;
    }
    v["messages"][0]["ciphertext"] = Value::String(hex::encode(bytes));
    assert!(play(v).is_err());
    Ok(())
}
