//! `[abuse]`: the abuse monitor's windows and thresholds, the ban ladder and the per-account
//! rate limits. What the numbers mean is in `config/relaybox.toml`; how they are applied is
//! in `actors::abuse` (verdicts) and `edge::session` (enforcement).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The ladder word for a ban without end.
pub const PERMANENT: &str = "permanent";

/// `[abuse]`: spam detection, bans and per-account rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// Run the abuse monitor (metrics are kept and rate limits apply either way).
    pub enabled: bool,
    /// The sliding window the per-account metrics cover.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often every active account is evaluated.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// How often accounts on the watch list are evaluated (with `watched_min_messages`).
    #[serde(with = "humantime_serde")]
    pub watch_evaluate_every: Duration,
    /// Ban durations for the 1st, 2nd, … offence; the last step repeats. `"permanent"` has no
    /// end and may only be the last step.
    pub ban_ladder: Vec<String>,
    /// An account with no offence for this long starts the ladder again.
    #[serde(with = "humantime_serde")]
    pub history_decay: Duration,
    /// Messages in the window before the spam pattern can ban an account.
    pub min_messages: u32,
    /// The same, for an account on the watch list (tighter).
    pub watched_min_messages: u32,
    /// Messages in the window before the spam pattern puts an account on the watch list.
    pub watch_min_messages: u32,
    /// Spam pattern: at most this share (percent) of messages went to accounts that have the
    /// sender in their contacts …
    pub max_symmetry_percent: u32,
    /// … and at least this share (percent) of messages went to a peer not messaged before in
    /// the window …
    pub min_peer_uniqueness_percent: u32,
    /// … and at most this share (percent) of messages had an envelope size not seen before in
    /// the window (same-sized envelopes are the same text).
    pub max_message_uniqueness_percent: u32,
    /// Blocks received in the window that, with `block_rate_percent`, ban an account.
    pub min_blocks: u32,
    /// Blocks per distinct peer messaged in the window (percent).
    pub block_rate_percent: u32,
    /// Messages (1:1 or group sends) one account may send per minute.
    pub sends_per_minute: u32,
    /// Conversations with a peer not messaged in the window, per account and minute.
    pub new_conversations_per_minute: u32,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(3600),
            evaluate_every: Duration::from_secs(60),
            watch_evaluate_every: Duration::from_secs(10),
            ban_ladder: ["1h", "6h", "24h", "7d", PERMANENT]
                .map(String::from)
                .to_vec(),
            history_decay: Duration::from_secs(30 * 24 * 3600),
            min_messages: 30,
            watched_min_messages: 15,
            watch_min_messages: 10,
            max_symmetry_percent: 20,
            min_peer_uniqueness_percent: 80,
            max_message_uniqueness_percent: 50,
            min_blocks: 3,
            block_rate_percent: 30,
            sends_per_minute: 120,
            new_conversations_per_minute: 30,
        }
    }
}

/// One step of the ban ladder: a duration, or no end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanLength {
    For(Duration),
    Permanent,
}

impl AbuseConfig {
    /// The parsed ladder. Validation (`validate.rs`) has checked it, so a failing step here
    /// is only reachable with an unvalidated config; it is skipped.
    pub fn ladder(&self) -> Vec<BanLength> {
        self.ban_ladder
            .iter()
            .filter_map(|s| parse_step(s).ok())
            .collect()
    }
}

/// Parses one ladder step: `"permanent"` or a positive humantime duration (`"6h"`, `"7d"`).
pub fn parse_step(s: &str) -> Result<BanLength, String> {
    if s == PERMANENT {
        return Ok(BanLength::Permanent);
    }
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
        Ok(d) => Ok(BanLength::For(d)),
        Err(e) => Err(format!(
            "{s:?} is neither a duration (like \"6h\") nor \"{PERMANENT}\": {e}"
        )),
    }
}

/// Every problem of a ladder, or none.
pub fn check_ladder(ladder: &[String]) -> Option<String> {
    if ladder.is_empty() {
        return Some("needs at least one step".into());
    }
    for (i, s) in ladder.iter().enumerate() {
        match parse_step(s) {
            Err(e) => return Some(format!("step {}: {e}", i + 1)),
            Ok(BanLength::Permanent) if i + 1 != ladder.len() => {
                return Some(format!(
                    "step {}: \"{PERMANENT}\" may only be the last step",
                    i + 1
                ))
            }
            Ok(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ladder_parses_and_ends_permanent() {
        let l = AbuseConfig::default().ladder();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0], BanLength::For(Duration::from_secs(3600)));
        assert_eq!(l[4], BanLength::Permanent);
    }

    #[test]
    fn a_malformed_ladder_is_described() {
        assert!(check_ladder(&[]).is_some());
        assert!(check_ladder(&["1h".into(), "soon".into()]).is_some_and(|e| e.contains("step 2")));
        assert!(check_ladder(&["permanent".into(), "1h".into()])
            .is_some_and(|e| e.contains("last step")));
        assert!(check_ladder(&["0s".into()]).is_some());
        assert!(check_ladder(&["2s".into(), "4s".into()]).is_none());
    }
}
