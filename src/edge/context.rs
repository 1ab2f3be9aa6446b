//! What every session needs from the relay, built once by `app.rs` and shared.

use std::sync::{Arc, Mutex};

use crate::actors::presence::Presence;
use crate::actors::Directory;
use crate::config::Config;
use crate::registration::ratelimit::RateLimiter;
use crate::registration::verifier::Verifier;
use crate::shutdown::Shutdown;
use crate::store::{Durability, Store};
use crate::wire::handshake::RelayIdentity;
use crate::wire::token::TokenKey;

/// Shared relay state for sessions. Everything here is either immutable or internally
/// synchronised.
pub struct RelayCtx {
    pub cfg: Config,
    /// The relay's Noise static key pair.
    pub identity: RelayIdentity,
    pub store: Store,
    pub durability: Durability,
    pub directory: Directory,
    /// Seals resumption tokens.
    pub tokens: TokenKey,
    /// HMAC key of verification codes at rest.
    pub code_secret: [u8; 32],
    pub verifier: Verifier,
    pub limits: Mutex<Limiters>,
    /// Who is online, and who may know.
    pub presence: Presence,
    pub shutdown: Shutdown,
    /// Blob files and the key that signs their URLs.
    pub blobs: crate::blob::Blobs,
    /// The audit log (`<data_dir>/audit.log`), one handle for every writer.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Where push endpoints may point (`push.allowed_hosts`, the relay's own listeners).
    pub push_policy: Arc<crate::actors::push_target::PushPolicy>,
}

/// Per-address, per-number and per-account rate limits (in memory: a restart resets them,
/// which only ever lets a client retry sooner). Handshakes per address are limited at
/// admission (`edge::limits`), before a session exists.
pub struct Limiters {
    pub codes_per_number: RateLimiter,
    pub codes_per_address: RateLimiter,
    /// Successful registrations per address (`registration.registrations_per_address_per_hour`).
    pub registrations_per_address: RateLimiter,
    /// Sends per account (`abuse.sends_per_minute`).
    pub sends_per_account: RateLimiter,
    /// Sends to a peer not messaged in the window (`abuse.new_conversations_per_minute`).
    pub new_conversations_per_account: RateLimiter,
    /// Contact-discovery lookups (`limits.contact_lookups_per_hour_per_account`).
    pub contact_lookups_per_account: RateLimiter,
    /// The same per address (`limits.contact_lookups_per_hour_per_ip`).
    pub contact_lookups_per_ip: RateLimiter,
    /// Key bundles claimed per claiming account (`keys.claims_per_account_per_hour`).
    pub claims_per_account: RateLimiter,
    /// One-time keys handed out per target device (`keys.one_time_claims_per_device_per_hour`).
    pub one_time_claims_per_device: RateLimiter,
    /// One per (claimer account, target device) and day: a repeat claimer gets the fallback.
    pub claim_pairs: RateLimiter,
    /// One KeysLow warning per device and hour.
    pub keys_low_warnings: RateLimiter,
}

impl RelayCtx {
    /// The limiters (a poisoned lock is still consistent: each check is one map update).
    pub fn limits(&self) -> std::sync::MutexGuard<'_, Limiters> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}
