//! The Noise handshake states fed arbitrary bytes, on both sides: the relay's responder for a
//! first frame (XX or IK), the relay's XX message 3, the client's XX and IK replies, and the
//! transport after a real handshake. Every path must end in an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relaybox::wire::handshake::{self, Accepted, ClientIk, ClientXx, StaticKeypair};
use relaybox::wire::messages::{ClientFrame, Login};

fn relay() -> StaticKeypair {
    StaticKeypair::from_private([7; 32])
}

fn device() -> StaticKeypair {
    StaticKeypair::from_private([9; 32])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let relay = relay();
    match mode % 5 {
        // The relay's first frame: version, pattern, Noise message 1.
        0 => {
            let _ = handshake::accept(&relay, bytes);
        }
        // The relay's XX message 3, after a genuine message 1.
        1 => {
            let Ok((_, first)) = ClientXx::start(&device()) else {
                return;
            };
            if let Ok(Accepted::Xx { state, .. }) = handshake::accept(&relay, &first) {
                let _ = state.finish(bytes);
            }
        }
        // The client's reading of the relay's XX message 2 (or a refusal).
        2 => {
            let Ok((client, _)) = ClientXx::start(&device()) else {
                return;
            };
            let _ = client.finish(bytes, &Login::default());
        }
        // The client's reading of the relay's IK answer (or a refusal).
        3 => {
            let Ok((client, _)) = ClientIk::start(&device(), &relay.public, &Login::default())
            else {
                return;
            };
            let _ = client.finish(bytes);
        }
        // An established session decrypting arbitrary transport frames.
        _ => {
            let Ok((client, first)) = ClientXx::start(&device()) else {
                return;
            };
            let Ok(Accepted::Xx { state, reply }) = handshake::accept(&relay, &first) else {
                return;
            };
            let Ok((_, msg3, _)) = client.finish(&reply, &Login::default()) else {
                return;
            };
            let Ok((mut transport, _, _)) = state.finish(&msg3) else {
                return;
            };
            let _ = transport.decrypt::<ClientFrame>(bytes, "ClientFrame");
        }
    }
});
