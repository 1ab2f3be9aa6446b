//! The session against itself and against bad input, without a relay.

use super::*;
use relaybox_core::wire::messages::{Error, ErrorCode};

#[test]
fn a_new_device_shows_a_pairing_code_that_the_cli_format_accepts() {
    let mut c = Companion::new();
    let code = c.pairing_code().unwrap();
    assert!(code.starts_with(PAIRING_PREFIX));
    let raw = B64.decode(&code[PAIRING_PREFIX.len()..]).unwrap();
    assert_eq!(raw.len(), 48);
    assert_eq!(&raw[..32], &c.noise.public);
    // Stable across calls (and saves): the primary may type it slowly.
    assert_eq!(c.pairing_code().unwrap(), code);
    let again = Companion::restore(&c.save())
        .unwrap()
        .pairing_code()
        .unwrap();
    assert_eq!(again, code);
}

#[test]
fn a_saved_device_restores_with_its_keys_and_outbox() {
    let mut c = Companion::new();
    c.account = Some("+14155550100".into());
    c.device = 2;
    let id = c.send_text("+14155550101", "hello", 1, None).unwrap();
    let r = Companion::restore(&c.save()).unwrap();
    assert_eq!(r.noise.public, c.noise.public);
    assert_eq!(r.account(), Some("+14155550100"));
    assert_eq!(r.outbox.len(), 1);
    assert_eq!(hex::encode(r.outbox[0].msg_id), id);
}

#[test]
fn garbage_state_is_refused_with_a_reason() {
    let e = Companion::restore(b"{not json").err().unwrap();
    assert!(e.0.contains("unreadable"), "{e}");
}

#[test]
fn garbage_from_the_relay_becomes_events_not_panics() {
    let mut c = Companion::new();
    c.on_message(b"anything");
    assert!(matches!(c.take_events()[..], [Event::BadFrame { .. }]));
    c.connect().unwrap();
    for junk in [&b""[..], b"\x00", b"\x01\x00\x04nope", &[0u8; 200][..]] {
        c.connect().unwrap();
        c.on_message(junk);
        assert!(!c.take_events().is_empty(), "{junk:?}");
    }
}

#[test]
fn an_unknown_device_refusal_while_pairing_means_wait_for_the_link() {
    let mut c = Companion::new();
    c.pairing_code();
    c.connect().unwrap();
    let refusal = relaybox_core::wire::handshake::refusal(ErrorCode::UnknownDevice, "not linked");
    c.on_message(&refusal);
    assert_eq!(c.take_events(), vec![Event::WaitingForLink]);
}

#[test]
fn bad_sends_are_refused_before_they_reach_the_outbox() {
    let mut c = Companion::new();
    assert!(c.send_text("not a number", "x", 0, None).is_err());
    assert!(c.send_text("+14155550101", "", 0, None).is_err());
    assert_eq!(c.outbox_len(), 0);
}

#[test]
fn the_qr_code_is_an_svg() {
    let svg = crate::qr_svg("rbx1:abc").unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
}

#[test]
fn an_unknown_device_login_result_while_pairing_means_wait_and_once_linked_means_logged_out() {
    let mut c = Companion::new();
    let e = Error::new(ErrorCode::UnknownDevice, "not linked yet");
    c.relay_error(e.clone());
    assert_eq!(c.take_events(), vec![Event::WaitingForLink]);
    c.account = Some("+14155550100".into());
    c.relay_error(e);
    assert!(matches!(c.take_events()[..], [Event::LoggedOut { .. }]));
    assert_eq!(c.account(), None);
}

#[test]
fn a_history_blob_opens_and_a_corrupt_one_is_a_clear_error() {
    let mut c = Companion::new();
    let entries = vec![HistoryEntry {
        thread: "+14155550101".into(),
        from: "+14155550100".into(),
        at_ms: 1,
        body: "hi".into(),
    }];
    let plain = serde_json::to_vec(&entries).unwrap();
    let (key, sealed) = relaybox_core::e2e::media::seal(&plain).unwrap();
    c.keep_history_blob("m1", "b".into(), sealed.len() as u64, hex::encode(key));
    assert_eq!(c.open_history("m1", &sealed).unwrap(), entries);
    let mut bad = sealed.clone();
    bad[20] ^= 1;
    assert!(c
        .open_history("m1", &bad)
        .unwrap_err()
        .0
        .contains("does not decrypt"));
    let (key, sealed) = relaybox_core::e2e::media::seal(b"not json").unwrap();
    c.keep_history_blob("m2", "b".into(), sealed.len() as u64, hex::encode(key));
    assert!(c
        .open_history("m2", &sealed)
        .unwrap_err()
        .0
        .contains("malformed"));
    assert!(c.open_history("m3", &sealed).is_err());
}
