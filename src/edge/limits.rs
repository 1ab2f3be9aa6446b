//! Connection admission: a total cap, a per-address cap and a per-address handshake rate.
//! A refused connection gets a plaintext refusal frame naming the limit, then is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::registration::ratelimit::RateLimiter;
use crate::wire::messages::ErrorCode;

/// Admission state shared by every listener.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    handshakes: RateLimiter,
}

/// Proof of admission; releases the slot when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub reason: String,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize, handshakes_per_second: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            inner: Mutex::new(Inner {
                total: 0,
                per_ip: HashMap::new(),
                handshakes: RateLimiter::new(
                    handshakes_per_second.max(1),
                    std::time::Duration::from_secs(1),
                ),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters are updated in single steps; a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip` or says which limit refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let mut inner = self.lock();
        if inner.total >= self.max_total {
            crate::telemetry::metrics::connection_refused("relay_limit");
            return Err(Refused {
                code: ErrorCode::TooManyConnections,
                reason: "relay connection limit reached".into(),
            });
        }
        let mine = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.max_per_ip {
            crate::telemetry::metrics::connection_refused("address_limit");
            return Err(Refused {
                code: ErrorCode::TooManyConnections,
                reason: "too many connections from this address".into(),
            });
        }
        if let Err(retry) = inner
            .handshakes
            .check(&ip.to_string(), crate::clock::now_ms())
        {
            crate::telemetry::metrics::connection_refused("handshake_rate");
            return Err(Refused {
                code: ErrorCode::RateLimited,
                reason: format!(
                    "too many handshakes from this address; retry in {} ms",
                    retry.0
                ),
            });
        }
        inner.total += 1;
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(n) = inner.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}
