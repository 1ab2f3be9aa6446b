//! Two or three in-memory devices talking through `E2e`, with the relay's part (the key
//! directory, delivery) played by the test.

use super::*;
use vodozemac::olm::Account;

const ALICE: &str = "+14155550100";
const BOB: &str = "+14155550101";
const CAROL: &str = "+14155550102";

/// What the directory answers to a claim: the `index`th one-time key of an upload, or its
/// fallback key when `index` is `None`.
fn claim(upload: &UploadKeys, device: u32, index: Option<usize>) -> DeviceKeys {
    let (one_time_key, is_fallback) = match index {
        Some(i) => (upload.one_time_keys[i].clone(), false),
        None => (upload.fallback_key.clone().expect("a fallback key"), true),
    };
    DeviceKeys {
        device,
        identity_key: upload.identity_key.clone(),
        signing_key: upload.signing_key.clone(),
        one_time_key: Some(one_time_key),
        is_fallback,
        account: String::new(),
    }
}

/// Sends `text` from `from` to `to` (device 0 on both sides) and returns what arrived.
fn send(from: &mut E2e, from_name: &str, to: &mut E2e, to_name: &str, text: &str) -> String {
    let env = from.encrypt(to_name, 0, None, text.as_bytes()).unwrap();
    let plain = to
        .decrypt(from_name, 0, env.olm_type, &env.ciphertext)
        .unwrap();
    String::from_utf8(plain).unwrap()
}

/// Alice with an established session to Bob (Bob has answered once).
fn established() -> (E2e, E2e) {
    let mut alice = E2e::new();
    let mut bob = E2e::new();
    let upload = bob.keys_to_upload(5);
    let env = alice
        .encrypt(BOB, 0, Some(&claim(&upload, 0, Some(0))), b"hello")
        .unwrap();
    assert_eq!(
        bob.decrypt(ALICE, 0, env.olm_type, &env.ciphertext)
            .unwrap(),
        b"hello"
    );
    assert_eq!(
        send(&mut bob, BOB, &mut alice, ALICE, "hi alice"),
        "hi alice"
    );
    (alice, bob)
}

#[test]
fn an_upload_carries_our_keys_the_requested_one_time_keys_and_one_fallback_key() {
    let mut bob = E2e::new();
    let upload = bob.keys_to_upload(5);
    assert_eq!(upload.identity_key, bob.identity_key());
    assert_eq!(upload.signing_key, bob.signing_key());
    assert_eq!(upload.one_time_keys.len(), 5);
    assert!(upload.fallback_key.is_some());
    for key in &upload.one_time_keys {
        assert_eq!(key.public_key.len(), KEY_BYTES);
        assert!(!key.key_id.is_empty() && key.key_id.len() <= MAX_KEY_ID_BYTES);
    }

    let again = bob.keys_to_upload(1_000);
    assert_eq!(
        again.one_time_keys.len(),
        50,
        "capped at vodozemac's published maximum"
    );
    assert!(
        again.fallback_key.is_none(),
        "the fallback key is published already"
    );
    let ids: std::collections::HashSet<_> = upload
        .one_time_keys
        .iter()
        .chain(&again.one_time_keys)
        .map(|k| k.key_id.clone())
        .collect();
    assert_eq!(ids.len(), 55, "key ids are unique");
}

#[test]
fn alice_and_bob_start_a_session_with_a_one_time_key_and_talk_both_ways_out_of_order() {
    let (mut alice, mut bob) = established();
    assert!(alice.has_session(BOB, 0) && bob.has_session(ALICE, 0));
    assert!(!alice.has_session(BOB, 1));
    assert_eq!(alice.peer_identity_key(BOB, 0), Some(bob.identity_key()));
    assert_eq!(bob.peer_identity_key(ALICE, 0), Some(alice.identity_key()));

    let envs: Vec<_> = (0..4)
        .map(|i| {
            alice
                .encrypt(BOB, 0, None, format!("m{i}").as_bytes())
                .unwrap()
        })
        .collect();
    assert!(envs.iter().all(|e| e.olm_type == 1 && e.device == 0));
    for i in [2, 0, 3, 1] {
        let plain = bob.decrypt(ALICE, 0, 1, &envs[i].ciphertext).unwrap();
        assert_eq!(plain, format!("m{i}").as_bytes());
    }
    for round in 0..3 {
        let text = format!("bob {round}");
        assert_eq!(send(&mut bob, BOB, &mut alice, ALICE, &text), text);
        let text = format!("alice {round}");
        assert_eq!(send(&mut alice, ALICE, &mut bob, BOB, &text), text);
    }
}

#[test]
fn pre_key_messages_keep_arriving_until_the_peer_answers_and_all_decrypt() {
    let mut alice = E2e::new();
    let mut bob = E2e::new();
    let bundle = claim(&bob.keys_to_upload(1), 0, Some(0));
    let first = alice.encrypt(BOB, 0, Some(&bundle), b"one").unwrap();
    let second = alice.encrypt(BOB, 0, None, b"two").unwrap();
    assert_eq!((first.olm_type, second.olm_type), (0, 0));

    // Delivered out of order: the second pre-key message creates the session.
    assert_eq!(
        bob.decrypt(ALICE, 0, 0, &second.ciphertext).unwrap(),
        b"two"
    );
    assert_eq!(bob.decrypt(ALICE, 0, 0, &first.ciphertext).unwrap(), b"one");
    assert_eq!(bob.peers[&(ALICE.to_owned(), 0)].sessions.len(), 1);
}

#[test]
fn a_replayed_pre_key_message_is_refused() {
    let mut alice = E2e::new();
    let mut bob = E2e::new();
    let bundle = claim(&bob.keys_to_upload(1), 0, Some(0));
    let env = alice.encrypt(BOB, 0, Some(&bundle), b"once").unwrap();
    bob.decrypt(ALICE, 0, 0, &env.ciphertext).unwrap();
    let err = bob.decrypt(ALICE, 0, 0, &env.ciphertext).unwrap_err();
    assert!(matches!(err, E2eError::Decryption(_)), "{err:?}");
}

#[test]
fn a_one_time_key_is_consumed_by_the_first_session() {
    let mut alice = E2e::new();
    let mut carol = E2e::new();
    let mut bob = E2e::new();
    let bundle = claim(&bob.keys_to_upload(1), 0, Some(0));
    let from_alice = alice.encrypt(BOB, 0, Some(&bundle), b"a").unwrap();
    // A directory that hands the same key out twice (a bug, or a replay) cannot make Bob
    // accept a second session on it.
    let from_carol = carol.encrypt(BOB, 0, Some(&bundle), b"c").unwrap();
    bob.decrypt(ALICE, 0, 0, &from_alice.ciphertext).unwrap();
    let err = bob
        .decrypt(CAROL, 0, 0, &from_carol.ciphertext)
        .unwrap_err();
    assert!(matches!(err, E2eError::SessionCreation(_)), "{err:?}");
    assert!(!bob.has_session(CAROL, 0));
}

#[test]
fn a_fallback_key_starts_sessions_when_one_time_keys_are_exhausted_and_is_rotated_after_use() {
    let mut bob = E2e::new();
    let upload = bob.keys_to_upload(0);
    assert!(upload.one_time_keys.is_empty());
    let fallback = claim(&upload, 0, None);

    let mut alice = E2e::new();
    let mut carol = E2e::new();
    let from_alice = alice
        .encrypt(BOB, 0, Some(&fallback), b"from alice")
        .unwrap();
    let from_carol = carol
        .encrypt(BOB, 0, Some(&fallback), b"from carol")
        .unwrap();
    assert_eq!(
        bob.decrypt(ALICE, 0, 0, &from_alice.ciphertext).unwrap(),
        b"from alice"
    );

    // Used once, so the next upload carries a fresh one ...
    let next = bob.keys_to_upload(0);
    let new_fallback = next.fallback_key.clone().unwrap();
    assert_ne!(
        new_fallback.public_key,
        fallback.one_time_key.unwrap().public_key
    );
    // ... while a bundle claimed before the rotation still works.
    assert_eq!(
        bob.decrypt(CAROL, 0, 0, &from_carol.ciphertext).unwrap(),
        b"from carol"
    );

    let mut dave = E2e::new();
    let env = dave
        .encrypt(BOB, 0, Some(&claim(&next, 0, None)), b"dave")
        .unwrap();
    assert_eq!(
        bob.decrypt("+14155550103", 0, 0, &env.ciphertext).unwrap(),
        b"dave"
    );
    assert_eq!(send(&mut bob, BOB, &mut alice, ALICE, "bye"), "bye");
}

#[test]
fn sessions_started_by_both_sides_at_once_converge() {
    let mut alice = E2e::new();
    let mut bob = E2e::new();
    let alice_keys = alice.keys_to_upload(1);
    let bob_keys = bob.keys_to_upload(1);
    let a1 = alice
        .encrypt(BOB, 0, Some(&claim(&bob_keys, 0, Some(0))), b"a1")
        .unwrap();
    let b1 = bob
        .encrypt(ALICE, 0, Some(&claim(&alice_keys, 0, Some(0))), b"b1")
        .unwrap();
    assert_eq!(
        bob.decrypt(ALICE, 0, a1.olm_type, &a1.ciphertext).unwrap(),
        b"a1"
    );
    assert_eq!(
        alice.decrypt(BOB, 0, b1.olm_type, &b1.ciphertext).unwrap(),
        b"b1"
    );
    for round in 0..3 {
        let text = format!("a{round}");
        assert_eq!(send(&mut alice, ALICE, &mut bob, BOB, &text), text);
        let text = format!("b{round}");
        assert_eq!(send(&mut bob, BOB, &mut alice, ALICE, &text), text);
    }
    assert_eq!(alice.encrypt(BOB, 0, None, b"x").unwrap().olm_type, 1);
}

#[test]
fn at_most_a_few_sessions_are_kept_per_peer_device() {
    let mut alice = E2e::new();
    let mut bob = E2e::new();
    let upload = bob.keys_to_upload(MAX_SESSIONS_PER_DEVICE + 2);
    for i in 0..MAX_SESSIONS_PER_DEVICE + 2 {
        alice.forget(BOB, 0);
        let env = alice
            .encrypt(BOB, 0, Some(&claim(&upload, 0, Some(i))), b"again")
            .unwrap();
        bob.decrypt(ALICE, 0, 0, &env.ciphertext).unwrap();
    }
    let sessions = &bob.peers[&(ALICE.to_owned(), 0)].sessions;
    assert_eq!(sessions.len(), MAX_SESSIONS_PER_DEVICE);
    // The newest session is the one Bob answers on.
    assert_eq!(send(&mut bob, BOB, &mut alice, ALICE, "latest"), "latest");
}

#[test]
fn a_changed_identity_key_is_reported_until_the_peer_is_forgotten() {
    let (mut alice, _old_bob) = established();
    let mut new_bob = E2e::new();
    let alice_keys = alice.keys_to_upload(2);

    let env = new_bob
        .encrypt(
            ALICE,
            0,
            Some(&claim(&alice_keys, 0, Some(0))),
            b"new phone",
        )
        .unwrap();
    let err = alice.decrypt(BOB, 0, 0, &env.ciphertext).unwrap_err();
    assert!(
        matches!(err, E2eError::IdentityChanged { device: 0, .. }),
        "{err:?}"
    );
    let err = alice
        .encrypt(
            BOB,
            0,
            Some(&claim(&new_bob.keys_to_upload(1), 0, Some(0))),
            b"x",
        )
        .unwrap_err();
    assert!(matches!(err, E2eError::IdentityChanged { .. }), "{err:?}");

    alice.forget(BOB, 0);
    assert!(!alice.has_session(BOB, 0));
    assert_eq!(
        alice.decrypt(BOB, 0, 0, &env.ciphertext).unwrap(),
        b"new phone"
    );
    assert_eq!(
        alice.peer_identity_key(BOB, 0),
        Some(new_bob.identity_key())
    );
}

#[test]
fn garbage_ciphertext_and_wrong_message_types_give_specific_errors() {
    let (mut alice, mut bob) = established();
    let normal = alice.encrypt(BOB, 0, None, b"x").unwrap();

    let err = bob.decrypt(ALICE, 0, 2, &normal.ciphertext).unwrap_err();
    assert!(matches!(err, E2eError::UnknownMessageType(2)), "{err:?}");
    for garbage in [&b""[..], b"\x03", b"garbage that is not an olm message"] {
        for olm_type in [0, 1] {
            let err = bob.decrypt(ALICE, 0, olm_type, garbage).unwrap_err();
            assert!(
                matches!(err, E2eError::MalformedMessage(_)),
                "{garbage:?}: {err:?}"
            );
        }
    }
    let err = bob.decrypt(ALICE, 0, 0, &normal.ciphertext).unwrap_err();
    assert!(matches!(err, E2eError::MalformedMessage(_)), "{err:?}");

    let mut tampered = normal.ciphertext.to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let err = bob.decrypt(ALICE, 0, 1, &tampered).unwrap_err();
    assert!(matches!(err, E2eError::Decryption(_)), "{err:?}");
    // The failures changed nothing: the genuine message still decrypts.
    assert_eq!(bob.decrypt(ALICE, 0, 1, &normal.ciphertext).unwrap(), b"x");

    let err = bob.decrypt(CAROL, 0, 1, &normal.ciphertext).unwrap_err();
    assert!(matches!(err, E2eError::NoSession { .. }), "{err:?}");
    let huge = vec![0u8; MAX_CIPHERTEXT_BYTES + 1];
    let err = bob.decrypt(ALICE, 0, 1, &huge).unwrap_err();
    assert!(
        matches!(err, E2eError::CiphertextTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn bad_bundles_give_specific_errors_and_start_no_session() {
    let mut bob = E2e::new();
    let good = claim(&bob.keys_to_upload(1), 3, Some(0));
    let mut alice = E2e::new();
    let check = |alice: &mut E2e, bundle: DeviceKeys, expect: fn(&E2eError) -> bool| {
        let err = alice.encrypt(BOB, 3, Some(&bundle), b"x").unwrap_err();
        assert!(expect(&err), "{err:?}");
        assert!(!alice.has_session(BOB, 3));
    };

    let err = alice.encrypt(BOB, 3, None, b"x").unwrap_err();
    assert!(
        matches!(err, E2eError::NoSession { device: 3, .. }),
        "{err:?}"
    );

    let short = DeviceKeys {
        identity_key: vec![1; 31],
        ..good.clone()
    };
    check(&mut alice, short, |e| {
        matches!(
            e,
            E2eError::KeyLength {
                what: "identity key",
                len: 31
            }
        )
    });
    let long = DeviceKeys {
        signing_key: vec![1; 33],
        ..good.clone()
    };
    check(&mut alice, long, |e| {
        matches!(
            e,
            E2eError::KeyLength {
                what: "signing key",
                len: 33
            }
        )
    });
    let mut short_otk = good.clone();
    short_otk
        .one_time_key
        .as_mut()
        .unwrap()
        .public_key
        .truncate(5);
    check(&mut alice, short_otk, |e| {
        matches!(
            e,
            E2eError::KeyLength {
                what: "one-time key",
                len: 5
            }
        )
    });
    // All zeros is a low-order Curve25519 point.
    let low_order = DeviceKeys {
        identity_key: vec![0; 32],
        ..good.clone()
    };
    check(&mut alice, low_order, |e| {
        matches!(e, E2eError::InvalidKey { .. })
    });
    let mut low_order_otk = good.clone();
    low_order_otk.one_time_key.as_mut().unwrap().public_key = vec![0; 32];
    check(&mut alice, low_order_otk, |e| {
        matches!(e, E2eError::InvalidKey { .. })
    });
    let mut long_id = good.clone();
    long_id.one_time_key.as_mut().unwrap().key_id = vec![b'k'; MAX_KEY_ID_BYTES + 1];
    check(&mut alice, long_id, |e| {
        matches!(e, E2eError::KeyIdLength { .. })
    });
    let mut empty_id = good.clone();
    empty_id.one_time_key.as_mut().unwrap().key_id.clear();
    check(&mut alice, empty_id, |e| {
        matches!(e, E2eError::KeyIdLength { len: 0 })
    });
    let no_otk = DeviceKeys {
        one_time_key: None,
        ..good.clone()
    };
    check(&mut alice, no_otk, |e| matches!(e, E2eError::NoOneTimeKey));
    let other_device = DeviceKeys {
        device: 4,
        ..good.clone()
    };
    check(&mut alice, other_device, |e| {
        matches!(
            e,
            E2eError::BundleDeviceMismatch {
                wanted: 3,
                bundle: 4
            }
        )
    });

    let env = alice.encrypt(BOB, 3, Some(&good), b"finally").unwrap();
    assert_eq!(env.device, 3);
    assert_eq!(
        bob.decrypt(ALICE, 0, 0, &env.ciphertext).unwrap(),
        b"finally"
    );
}

#[test]
fn an_olm_v1_pre_key_message_is_refused_without_consuming_the_one_time_key() {
    let mut bob = E2e::new();
    let upload = bob.keys_to_upload(1);
    let identity = Curve25519PublicKey::from_slice(&upload.identity_key).unwrap();
    let otk = Curve25519PublicKey::from_slice(&upload.one_time_keys[0].public_key).unwrap();

    let old_client = Account::new();
    let mut session = old_client.create_outbound_session(SessionConfig::version_1(), identity, otk);
    let OlmMessage::PreKey(message) = session.encrypt(b"downgrade") else {
        panic!("a new session sends pre-key messages");
    };
    let err = bob.decrypt(ALICE, 0, 0, &message.to_bytes()).unwrap_err();
    assert!(matches!(err, E2eError::OutdatedOlmVersion), "{err:?}");

    let mut alice = E2e::new();
    let env = alice
        .encrypt(BOB, 0, Some(&claim(&upload, 0, Some(0))), b"v2")
        .unwrap();
    assert_eq!(bob.decrypt(ALICE, 0, 0, &env.ciphertext).unwrap(), b"v2");
}

#[test]
fn pickled_devices_continue_the_conversation_after_a_json_round_trip() {
    let (alice, bob) = established();
    let mut bob_keys = E2e::new();
    let upload = bob_keys.keys_to_upload(2);
    let reload = |e: &E2e| {
        let json = serde_json::to_string(&e.to_pickle()).unwrap();
        E2e::from_pickle(serde_json::from_str(&json).unwrap()).unwrap()
    };
    let (mut alice, mut bob) = (reload(&alice), reload(&bob));
    assert_eq!(
        send(&mut alice, ALICE, &mut bob, BOB, "after restart"),
        "after restart"
    );
    assert_eq!(
        send(&mut bob, BOB, &mut alice, ALICE, "still here"),
        "still here"
    );

    // Unpublished state survives too: a key uploaded before the restart starts a session
    // after it, exactly once.
    let mut bob_keys = reload(&bob_keys);
    let mut carol = E2e::new();
    let env = carol
        .encrypt(BOB, 0, Some(&claim(&upload, 0, Some(1))), b"hi")
        .unwrap();
    assert_eq!(
        bob_keys.decrypt(CAROL, 0, 0, &env.ciphertext).unwrap(),
        b"hi"
    );
    let bob_keys = reload(&bob_keys);
    assert!(bob_keys.has_session(CAROL, 0));
    let mut bob_keys = reload(&bob_keys);
    let mut mallory = E2e::new();
    let env = mallory
        .encrypt(BOB, 0, Some(&claim(&upload, 0, Some(1))), b"reused")
        .unwrap();
    let err = bob_keys
        .decrypt("+14155550104", 0, 0, &env.ciphertext)
        .unwrap_err();
    assert!(matches!(err, E2eError::SessionCreation(_)), "{err:?}");
    assert!(bob_keys.keys_to_upload(0).fallback_key.is_none());
}

#[test]
fn a_pickle_of_an_unknown_version_is_refused() {
    let mut json = serde_json::to_value(E2e::new().to_pickle()).unwrap();
    json["version"] = 99.into();
    let err = E2e::from_pickle(serde_json::from_value(json).unwrap()).unwrap_err();
    assert!(matches!(err, E2eError::PickleVersion(99)), "{err:?}");
}
