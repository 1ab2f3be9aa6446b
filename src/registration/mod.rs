//! Registration building blocks: the pieces of the `RequestCode` → `VerifyCode` loop-back.
//!
//! Owns:
//! - [`phone`]: normalising what a person types into an E.164 [`AccountId`](crate::ids::AccountId);
//! - [`codes`]: issuing a random verification code, keeping only its HMAC, and checking a try
//!   (expiry, attempt budget, constant-time compare);
//! - [`ratelimit`]: an in-memory keyed token bucket, used per number and per peer address;
//! - [`verifier`]: how a code leaves the relay (`log`, `command`, `webhook`).
//!
//! Does not own storage (the store module persists [`CodeRecord`]s), sessions, or the mapping
//! to wire error codes (the edge decides those in one place). Everything here is pure or a small
//! async function; time is passed in as `now_ms` (milliseconds since the Unix epoch).

pub mod codes;
pub mod phone;
pub mod ratelimit;
pub mod verifier;

pub use codes::{CodeError, CodeRecord};
pub use phone::{normalise, PhoneError};
pub use ratelimit::{RateLimiter, RetryAfter};
pub use verifier::{Verifier, VerifierError};
