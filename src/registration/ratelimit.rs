//! An in-memory keyed token bucket, used per phone number and per peer address.
//!
//! Owns the buckets and their memory bound. Does not own the keys' meaning (the caller passes
//! a normalised number or an IP address as text) nor persistence: a restart forgets every
//! bucket, which only ever makes the relay more permissive for one window.
//!
//! # Buckets
//!
//! Each key has a bucket of `capacity` tokens that refills continuously, `capacity` tokens per
//! `per`: a burst of `capacity`, then one request every `per / capacity`. A check takes one
//! token or answers how long until one is there. Arithmetic is exact integers (a token is
//! `per_ms` units, refill is `capacity` units per millisecond), so no rounding drifts.
//!
//! # Memory bound
//!
//! A full bucket is the same as no bucket, so full buckets are dropped by a sweep (O(keys))
//! that runs once per `per`, and at most once per [`MIN_SWEEP_INTERVAL_MS`], so its cost is
//! amortised. The number of keys is capped ([`DEFAULT_MAX_KEYS`]). A new key at the cap triggers
//! a sweep; if that frees nothing, new keys are refused with [`RetryAfter`] until the earliest
//! bucket is full again (and at least [`MIN_SWEEP_INTERVAL_MS`]); known keys keep working.
//! Refusing rather than evicting is deliberate: evicting would let a flood of fresh keys reset
//! the bucket of a number being bombed with codes, and 100 000 keys busy within one window is
//! already an attack on a cost-bearing path (every code may be an SMS), where failing closed is
//! the safe side.

use std::collections::HashMap;
use std::time::Duration;

/// Default cap on the number of keys one limiter tracks (~100 bytes each, so ~10 MB).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Shortest time between two sweeps, so that a flood at the key cap cannot make every check
/// pay for a full sweep.
pub const MIN_SWEEP_INTERVAL_MS: u64 = 1_000;

/// The request was refused; a retry after this many milliseconds can succeed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("rate limited: retry after {0} ms")]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// A keyed token bucket. See the module docs for the refill rule and the memory bound.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per bucket, and tokens refilled per `per_ms`. At least 1.
    capacity: u128,
    /// The refill window in milliseconds; also the units of one token. At least 1.
    per_ms: u128,
    /// Largest number of keys tracked.
    max_keys: usize,
    buckets: HashMap<String, Bucket>,
    /// The next periodic sweep runs at this instant (ms).
    next_sweep_ms: u64,
    /// A new key at the cap may trigger a sweep from this instant (ms) on; until then it is
    /// refused. Set by each sweep to when the earliest kept bucket is full again.
    cap_sweep_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Fill level in units (one token = `per_ms` units), as of `at_ms`.
    level: u128,
    at_ms: u64,
}

impl RateLimiter {
    /// At most `capacity` requests per `per` and key, in a burst or spread out.
    /// `capacity` 0 is taken as 1 and `per` is rounded to whole milliseconds, at least 1.
    pub fn new(capacity: u32, per: Duration) -> Self {
        Self::with_max_keys(capacity, per, DEFAULT_MAX_KEYS)
    }

    /// As [`new`](Self::new), tracking at most `max_keys` keys (at least 1).
    pub fn with_max_keys(capacity: u32, per: Duration, max_keys: usize) -> Self {
        Self {
            capacity: u128::from(capacity.max(1)),
            per_ms: per.as_millis().max(1),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            next_sweep_ms: 0,
            cap_sweep_ms: 0,
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    /// A clock that goes backwards refills nothing; it never panics or over-refills.
    pub fn check(&mut self, key: &str, now_ms: u64) -> Result<(), RetryAfter> {
        self.check_n(key, 1, now_ms)
    }

    /// Takes `n` tokens at once (at most the capacity: a bigger `n` is taken as the
    /// capacity), or answers how long until `n` are there and takes none.
    pub fn check_n(&mut self, key: &str, n: u32, now_ms: u64) -> Result<(), RetryAfter> {
        if now_ms >= self.next_sweep_ms {
            self.sweep(now_ms);
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            if now_ms >= self.cap_sweep_ms {
                self.sweep(now_ms);
            }
            if self.buckets.len() >= self.max_keys {
                return Err(RetryAfter(self.cap_sweep_ms.saturating_sub(now_ms).max(1)));
            }
        }
        let (capacity, full) = (self.capacity, self.full());
        let cost = self.per_ms * u128::from(n).clamp(1, capacity);
        let old = self.buckets.get(key).copied().unwrap_or(Bucket {
            level: full,
            at_ms: now_ms,
        });
        let level = refilled(&old, now_ms, capacity, full);
        let (level, answer) = if level >= cost {
            (level - cost, Ok(()))
        } else {
            let ms = (cost - level).div_ceil(capacity);
            (
                level,
                Err(RetryAfter(u64::try_from(ms).unwrap_or(u64::MAX))),
            )
        };
        let new = Bucket {
            level,
            at_ms: old.at_ms.max(now_ms),
        };
        match self.buckets.get_mut(key) {
            Some(bucket) => *bucket = new,
            None => {
                self.buckets.insert(key.to_owned(), new);
            }
        }
        answer
    }

    /// Returns `n` tokens taken by [`check_n`](Self::check_n) for a request that a second
    /// limit then refused, so the first limit does not charge for it.
    pub fn give_back(&mut self, key: &str, n: u32) {
        let (capacity, full) = (self.capacity, self.full());
        if let Some(b) = self.buckets.get_mut(key) {
            b.level = b
                .level
                .saturating_add(self.per_ms * u128::from(n).clamp(1, capacity))
                .min(full);
        }
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn full(&self) -> u128 {
        self.capacity * self.per_ms
    }

    /// Drops every bucket that is full by `now_ms` and schedules the next sweeps.
    fn sweep(&mut self, now_ms: u64) {
        let (capacity, full) = (self.capacity, self.full());
        let mut earliest_full_ms = u64::MAX;
        self.buckets.retain(|_, bucket| {
            let level = refilled(bucket, now_ms, capacity, full);
            if level >= full {
                return false;
            }
            let wait = u64::try_from((full - level).div_ceil(capacity)).unwrap_or(u64::MAX);
            earliest_full_ms = earliest_full_ms.min(now_ms.saturating_add(wait));
            true
        });
        let min_next = now_ms.saturating_add(MIN_SWEEP_INTERVAL_MS);
        let window = u64::try_from(self.per_ms).unwrap_or(u64::MAX);
        self.next_sweep_ms = now_ms.saturating_add(window).max(min_next);
        // At the cap, nothing can be freed before the earliest kept bucket is full again.
        self.cap_sweep_ms = if self.buckets.len() >= self.max_keys {
            earliest_full_ms.max(min_next)
        } else {
            min_next
        };
    }
}

/// The bucket's level at `now_ms`, capped at `full`.
fn refilled(bucket: &Bucket, now_ms: u64, capacity: u128, full: u128) -> u128 {
    let elapsed = u128::from(now_ms.saturating_sub(bucket.at_ms));
    bucket
        .level
        .saturating_add(elapsed.saturating_mul(capacity))
        .min(full)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_full_bucket_allows_a_burst_of_capacity_then_says_when_to_retry() {
        // 3 per second: one token every 333.3 ms.
        let mut rl = RateLimiter::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(rl.check("+14155550100", T0), Ok(()));
        }
        assert_eq!(rl.check("+14155550100", T0), Err(RetryAfter(334)));
        assert_eq!(rl.check("+14155550100", T0 + 300), Err(RetryAfter(34)));
    }

    #[test]
    fn tokens_refill_over_time_and_no_earlier() {
        let mut rl = RateLimiter::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            rl.check("k", T0).unwrap();
        }
        let Err(RetryAfter(wait)) = rl.check("k", T0) else {
            panic!("should be limited")
        };
        assert!(rl.check("k", T0 + wait - 1).is_err());
        assert_eq!(rl.check("k", T0 + wait), Ok(()));
        // After a full window the whole burst is back.
        for _ in 0..3 {
            assert_eq!(rl.check("k", T0 + 5_000), Ok(()));
        }
        assert!(rl.check("k", T0 + 5_000).is_err());
    }

    #[test]
    fn keys_have_separate_buckets() {
        let mut rl = RateLimiter::new(1, Duration::from_secs(60));
        assert_eq!(rl.check("10.0.0.1", T0), Ok(()));
        assert_eq!(rl.check("10.0.0.1", T0), Err(RetryAfter(60_000)));
        assert_eq!(rl.check("10.0.0.2", T0), Ok(()));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut rl = RateLimiter::new(1, Duration::from_secs(60));
        rl.check("k", T0).unwrap();
        assert!(rl.check("k", T0 - 10_000).is_err());
        assert!(rl.check("k", T0 + 59_999).is_err());
        assert_eq!(rl.check("k", T0 + 60_000), Ok(()));
    }

    #[test]
    fn full_buckets_are_swept_after_a_window() {
        let mut rl = RateLimiter::new(2, Duration::from_secs(1));
        for i in 0..100 {
            rl.check(&format!("k{i}"), T0).unwrap();
        }
        assert_eq!(rl.len(), 100);
        rl.check("late", T0 + 1_000).unwrap();
        assert_eq!(rl.len(), 1, "only the bucket just used is kept");
    }

    #[test]
    fn at_the_key_cap_new_keys_are_refused_and_known_keys_still_served() {
        let mut rl = RateLimiter::with_max_keys(2, Duration::from_secs(10), 3);
        for k in ["a", "b", "c"] {
            rl.check(k, T0).unwrap();
        }
        // The cap was not reached at the last sweep, so "d" waits out the sweep spacing; that
        // sweep frees nothing (every bucket is half empty) and "d" then waits until "a", the
        // earliest, is full again at T0 + 5 s.
        assert_eq!(rl.check("d", T0), Err(RetryAfter(MIN_SWEEP_INTERVAL_MS)));
        assert_eq!(rl.check("d", T0 + 1_000), Err(RetryAfter(4_000)));
        assert_eq!(rl.check("a", T0 + 1_001), Ok(()));
        assert_eq!(rl.len(), 3);
        // Once buckets are full again they are swept and new keys are welcome.
        assert_eq!(rl.check("d", T0 + 10_001), Ok(()));
        assert!(rl.len() <= 3);
    }

    #[test]
    fn zero_capacity_and_zero_window_are_clamped_not_panics() {
        let mut rl = RateLimiter::new(0, Duration::ZERO);
        assert_eq!(rl.check("k", T0), Ok(()));
        assert_eq!(rl.check("k", T0), Err(RetryAfter(1)));
        assert_eq!(rl.check("k", T0 + 1), Ok(()));
    }
}
