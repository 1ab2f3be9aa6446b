//! Power loss beyond `kill -9`: the relay's data directory is a FUSE filesystem served by this
//! test (`common/powerfs/`) that keeps only what was fsync'd. The crash-loop load runs while a
//! driver cuts the power at random moments: it kills the relay with SIGKILL, unmounts, throws
//! away every write and directory change not made durable (all of them, or a random torn subset
//! of pages), mounts the survivors again and restarts the relay on them. The Jepsen-style
//! checker must then find 0 acknowledged messages lost, 0 unexpected and 0 duplicated.
//!
//! CI runs 20 cuts. By hand: `POWER_CUTS=200 POWER_SEED=7 cargo test --release --test
//! power_loss -- --nocapture` (also `POWER_SENDERS`).
//!
//! Needs /dev/fuse and root (or `fusermount3`); `tests/run.sh` checks, and this test fails
//! loudly rather than skipping when it cannot mount.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/faultload.rs"]
mod faultload;
#[path = "common/jepsen.rs"]
mod jepsen;
#[path = "common/powerfs/mod.rs"]
mod powerfs;

use std::sync::{Arc, Mutex};

use common::Relay;
use faultload::env_or;
use powerfs::{Cut, PowerFs};
use rand::Rng;

#[tokio::test]
async fn no_acknowledged_message_is_lost_when_the_power_is_cut() {
    let cuts = env_or("POWER_CUTS", 20);
    let senders = env_or("POWER_SENDERS", 4) as usize;
    let seed = faultload::seed("POWER_SEED");
    println!(
        "power loss: seed={seed} cuts={cuts} senders={senders} (rerun with POWER_SEED={seed})"
    );

    let mut mounted = None;
    let relay = Relay::start_prepared("", |r| mounted = Some(PowerFs::mount(&r.data_dir())));
    let fs = Arc::new(Mutex::new(mounted.unwrap()));
    let torn = Arc::new(Mutex::new(0u64));
    let (driver_fs, driver_torn) = (fs.clone(), torn.clone());
    let (verdict, mut relay) = faultload::run(relay, senders, cuts, seed, move |relay, rng| {
        relay.kill9();
        let mode = if rng.gen_bool(0.5) {
            *driver_torn.lock().unwrap() += 1;
            Cut::Torn
        } else {
            Cut::DropAll
        };
        driver_fs.lock().unwrap().cut(mode, rng);
        relay.restart();
    })
    .await;
    // The relay must be gone before the filesystem is unmounted.
    relay.stop();
    let syncs = fs.lock().unwrap().syncs();
    drop(fs);

    let torn = *torn.lock().unwrap();
    println!(
        "power loss: cuts={cuts} (torn {torn}, drop-all {}) fsyncs={syncs} {}",
        cuts - torn,
        verdict.summary()
    );
    faultload::assert_valid(&verdict, cuts, seed, &relay);
}
