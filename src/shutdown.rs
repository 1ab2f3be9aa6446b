//! Graceful shutdown: one signal, every task sees it, the relay waits for them to drain
//! (bounded by the grace period). The pattern of mini-redis: a watch channel to announce, and
//! a drain channel whose senders are held by the tasks, so "all dropped" means "all done".

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Announces shutdown to every holder. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Held by every task that must finish before the relay exits.
    drain: mpsc::Sender<()>,
}

/// The side that triggers and awaits shutdown.
pub struct ShutdownController {
    tx: watch::Sender<bool>,
    drain_rx: mpsc::Receiver<()>,
    drain_tx: Option<mpsc::Sender<()>>,
}

impl ShutdownController {
    pub fn new() -> (Self, Shutdown) {
        let (tx, rx) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let s = Shutdown {
            rx,
            drain: drain_tx.clone(),
        };
        (
            Self {
                tx,
                drain_rx,
                drain_tx: Some(drain_tx),
            },
            s,
        )
    }

    /// Announces shutdown and waits up to `grace` for every task to drop its handle.
    /// Returns `false` if the grace period ran out.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.tx.send(true);
        self.drain_tx.take();
        tokio::time::timeout(grace, self.drain_rx.recv())
            .await
            .is_ok()
    }
}

impl Shutdown {
    /// Resolves when shutdown has been announced.
    pub async fn recv(&mut self) {
        // An error means the controller is gone, which is also shutdown.
        let _ = self.rx.wait_for(|&s| s).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// A handle for a new task; the relay waits for it on shutdown.
    pub fn task(&self) -> Shutdown {
        Self {
            rx: self.rx.clone(),
            drain: self.drain.clone(),
        }
    }

    /// Keeps `drain` referenced so the handle counts as a live task.
    pub fn holds_drain(&self) -> bool {
        !self.drain.is_closed()
    }
}
