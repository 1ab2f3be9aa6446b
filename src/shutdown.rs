//! Graceful shutdown: one signal, every task sees it, the relay waits for them to drain
//! (bounded by the grace period). The pattern of mini-redis: a watch channel to announce, and
//! a drain channel whose senders are held by the tasks, so "all dropped" means "all done".

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Announces shutdown to every holder. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Held by every task that must finish before the relay exits; `None` for a handle that
    /// only listens (shared state must not keep the relay waiting for itself).
    drain: Option<mpsc::Sender<()>>,
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
            drain: Some(drain_tx.clone()),
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

    /// A handle that sees the signal but is not waited for (for long-lived shared state).
    pub fn listener(&self) -> Shutdown {
        Self {
            rx: self.rx.clone(),
            drain: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_tasks_but_not_for_listeners() {
        let (controller, s) = ShutdownController::new();
        let _listener = s.listener();
        let mut task = s.task();
        drop(s);
        let worker = tokio::spawn(async move {
            task.recv().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert!(
            controller.shutdown(Duration::from_secs(5)).await,
            "drained in time"
        );
        assert!(worker.is_finished());
    }

    #[tokio::test]
    async fn a_task_that_never_finishes_runs_out_the_grace_period() {
        let (controller, s) = ShutdownController::new();
        let _stuck = s.task();
        drop(s);
        assert!(!controller.shutdown(Duration::from_millis(50)).await);
    }
}
