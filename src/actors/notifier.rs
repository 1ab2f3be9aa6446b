//! The notifier: tells an offline device that something waits for it, by POSTing to the push
//! endpoint the device registered (a self-hosted ntfy topic, a UnifiedPush distributor, …).
//!
//! The notification carries no content and no sender: only that something is waiting,
//! whether it is muted (so the device stays silent), and the relay to connect to. Sending is
//! best effort and off the delivery path: a full queue drops the notification, a failed POST
//! is logged, and neither ever blocks or loses a message (the message is in the queue).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::push_target::PushPolicy;
use crate::ids::DeviceId;
use crate::store::Store;

/// Notifications waiting to be sent; beyond this they are dropped.
pub const NOTIFIER_QUEUE: usize = 1024;
/// At most one notification per device in this interval (a burst of messages wakes it once).
pub const COALESCE: Duration = Duration::from_secs(10);
/// Deadline of one POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of a push notification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub waiting: bool,
    pub muted: bool,
    /// `host:port` of the relay holding the messages.
    pub relay: String,
}

/// Handle to the notifier task. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<(String, Notification)>>,
    store: Option<Store>,
    relay: String,
    last: Arc<Mutex<HashMap<DeviceId, Instant>>>,
}

impl Notifier {
    /// Starts the sending task. `relay` is the address put in notifications.
    pub fn spawn(store: Store, relay: String, policy: Arc<PushPolicy>) -> Self {
        let (tx, rx) = mpsc::channel(NOTIFIER_QUEUE);
        tokio::spawn(run(rx, policy));
        Self {
            tx: Some(tx),
            store: Some(store),
            relay,
            last: Arc::default(),
        }
    }

    /// A notifier that sends nothing (tests, tools).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            store: None,
            relay: String::new(),
            last: Arc::default(),
        }
    }

    /// Something was queued for the offline device `d`.
    pub fn waiting(&self, d: &DeviceId, muted: bool) {
        let (Some(tx), Some(store)) = (&self.tx, &self.store) else {
            return;
        };
        let endpoint = match store.push_endpoint(d) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(device = %d, error = %e, "Reading a push endpoint failed.");
                return;
            }
        };
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(d)
                .is_some_and(|t| now.duration_since(*t) < COALESCE)
            {
                return;
            }
            last.insert(d.clone(), now);
            if last.len() > 100_000 {
                last.retain(|_, t| now.duration_since(*t) < COALESCE);
            }
        }
        let n = Notification {
            waiting: true,
            muted,
            relay: self.relay.clone(),
        };
        if tx.try_send((endpoint, n)).is_err() {
            tracing::warn!(device = %d, "Push queue full; notification dropped (the message is kept).");
        }
    }
}

async fn run(mut rx: mpsc::Receiver<(String, Notification)>, policy: Arc<PushPolicy>) {
    while let Some((endpoint, n)) = rx.recv().await {
        let url = endpoint.clone();
        let policy = policy.clone();
        // Checked again on what the name resolves to now: a host that passed at
        // registration may have been pointed at this machine since (DNS rebinding).
        let sent = tokio::task::spawn_blocking(move || {
            policy
                .check_blocking(&url)
                .map_err(|e| format!("refused: {e}"))?;
            post(&url, &n)
        })
        .await;
        match sent {
            Ok(Ok(())) => tracing::debug!(endpoint = %endpoint, "Push notification sent."),
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "Push notification failed.")
            }
            Err(e) => tracing::warn!(error = %e, "Push task failed."),
        }
    }
}

fn post(url: &str, n: &Notification) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(POST_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let resp = agent.post(url).send_json(n).map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("endpoint answered {}", resp.status()))
    }
}
