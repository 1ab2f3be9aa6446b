//! The Device actor on its own: what it pushes, in which order, from sled's part of the queue
//! and the log's, across a reconnect and while entries move from the log to sled.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::actors::notifier::Notifier;
use crate::ids::AccountId;

fn record(i: u32) -> QueueRecord {
    QueueRecord {
        enqueued_at_ms: 1,
        item: QueueItem::Message {
            msg_id: [u8::try_from(i % 251).unwrap(); 16],
            from: "+14155550102".into(),
            from_device: 0,
            timestamp_ms: u64::from(i),
            olm_type: 1,
            ciphertext: i.to_be_bytes().to_vec().into(),
            kind: 1,
            group: String::new(),
        },
    }
}

/// The seqs and ciphertexts of the frames pushed to `rx` until it is quiet.
async fn pushed(rx: &mut mpsc::Receiver<Push>) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    while let Ok(Some(Push::Frame(f))) =
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
    {
        if let Some(server_frame::Body::Deliver(d)) = f.body {
            out.push((
                d.seq,
                u32::from_be_bytes(d.ciphertext[..].try_into().unwrap()),
            ));
        }
    }
    out
}

/// The actor of device `id` with a delivery window of `window`, on `store`.
fn start(store: &Store, id: &DeviceId, window: usize) -> Addr<Device> {
    let settings = DeviceSettings {
        window,
        idle_stop: Duration::from_secs(60),
    };
    let directory = Directory::new(store.clone(), settings.clone(), Notifier::disabled());
    Device::new(id.clone(), store.clone(), directory, settings).start()
}

/// Queues `i` for `id` in the log, waits for its commit and tells the actor (as the relay's
/// commit dispatcher does).
async fn enqueue(store: &Store, device: &Addr<Device>, id: &DeviceId, i: u32) {
    let seq = store.queue_push(id, &record(i)).unwrap();
    store.log().wait(seq).await.unwrap();
    device.send(Durable { upto: seq }).await.unwrap();
}

#[actix_rt::test]
async fn entries_reach_the_session_in_order_from_sled_and_the_log_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = DeviceId::new(AccountId::parse("+14155550101").unwrap(), 0);
    // An offline backlog already moved to sled (its log segment retired).
    for i in 0..3 {
        store.queue_push(&id, &record(i)).unwrap();
    }
    store.log().retire_all().unwrap();
    let device = start(&store, &id, 8);
    for i in 3..6 {
        enqueue(&store, &device, &id, i).await;
    }
    let (tx, mut rx) = mpsc::channel(64);
    device.send(Attach { session_id: 1, tx }).await.unwrap();
    let first = pushed(&mut rx).await;
    let order: Vec<u32> = first.iter().map(|&(_, c)| c).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5], "sled's backlog, then the log");

    // Acknowledge two; more arrive while online; the window (8) bounds what is in flight.
    let seqs: Vec<u64> = first.iter().map(|&(s, _)| s).collect();
    device
        .send(Ack {
            session_id: 1,
            seqs: seqs[..2].to_vec(),
        })
        .await
        .unwrap();
    for i in 6..12 {
        enqueue(&store, &device, &id, i).await;
    }
    let more: Vec<u32> = pushed(&mut rx).await.iter().map(|&(_, c)| c).collect();
    assert_eq!(
        more,
        [6, 7, 8, 9],
        "6 in flight + 4 = 2 acked + the window of 8"
    );

    // A new session gets every unacknowledged entry again, oldest first.
    let (tx, mut rx) = mpsc::channel(64);
    device.send(Attach { session_id: 2, tx }).await.unwrap();
    let again: Vec<u32> = pushed(&mut rx).await.iter().map(|&(_, c)| c).collect();
    assert_eq!(again, [2, 3, 4, 5, 6, 7, 8, 9]);
    // The Ack was handled before `send` returned: the two entries left the store.
    assert_eq!(store.queue_range(&id, None, 100).unwrap().len(), 10);
}

#[actix_rt::test]
async fn entries_that_move_to_sled_while_the_window_is_full_are_still_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = DeviceId::new(AccountId::parse("+14155550101").unwrap(), 0);
    let device = start(&store, &id, 4);
    let (tx, mut rx) = mpsc::channel(64);
    device.send(Attach { session_id: 1, tx }).await.unwrap();
    for i in 0..10 {
        enqueue(&store, &device, &id, i).await;
    }
    let first = pushed(&mut rx).await;
    assert_eq!(first.len(), 4, "the window");
    // The rest retires into sled while the device reads only the log.
    store.log().retire_all().unwrap();
    let mut got: Vec<u32> = first.iter().map(|&(_, c)| c).collect();
    let mut inflight: Vec<u64> = first.iter().map(|&(s, _)| s).collect();
    while got.len() < 10 {
        device
            .send(Ack {
                session_id: 1,
                seqs: std::mem::take(&mut inflight),
            })
            .await
            .unwrap();
        let next = pushed(&mut rx).await;
        assert!(!next.is_empty(), "stalled after {got:?}");
        got.extend(next.iter().map(|&(_, c)| c));
        inflight = next.iter().map(|&(s, _)| s).collect();
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}
