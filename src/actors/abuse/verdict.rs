//! The abuse monitor's judgement, as pure functions: what a window of metrics calls for,
//! and how long a ban lasts given the account's history.

use crate::config::{AbuseConfig, BanLength};
use crate::store::{AbuseRecord, WindowMetrics};

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// Put on the watch list, with the reason.
    Watch(String),
    /// Ban, with the reason.
    Ban(String),
}

/// Judges one account's window. `watched`: it is on the watch list (tighter volume bar).
pub fn judge(m: &WindowMetrics, cfg: &AbuseConfig, watched: bool) -> Outcome {
    let pattern = m.symmetry_percent <= cfg.max_symmetry_percent
        && m.peer_uniqueness_percent >= cfg.min_peer_uniqueness_percent
        && m.message_uniqueness_percent <= cfg.max_message_uniqueness_percent;
    let describe = || {
        format!(
            "{} messages in the window: {}% to accounts that have it in their contacts, {}% to new peers, {}% new envelope sizes",
            m.messages, m.symmetry_percent, m.peer_uniqueness_percent, m.message_uniqueness_percent
        )
    };
    let ban_bar = if watched {
        cfg.watched_min_messages
    } else {
        cfg.min_messages
    };
    if pattern && m.messages >= ban_bar {
        return Outcome::Ban(format!("spam pattern: {}", describe()));
    }
    if m.blocks >= cfg.min_blocks && m.block_rate_percent >= cfg.block_rate_percent {
        return Outcome::Ban(format!(
            "blocked by {} accounts ({}% of the {} peers it messaged)",
            m.blocks, m.block_rate_percent, m.distinct_peers
        ));
    }
    if pattern && m.messages >= cfg.watch_min_messages {
        return Outcome::Watch(format!("spam pattern starting: {}", describe()));
    }
    if m.blocks > 0 && m.block_rate_percent >= cfg.block_rate_percent {
        return Outcome::Watch(format!("blocked by {} accounts", m.blocks));
    }
    Outcome::Nothing
}

/// The offence number and the end (`None`: permanent) of a new ban at `now_ms`: history
/// older than `decay_ms` is forgotten, then the ladder step of this offence applies (the
/// last step repeats).
pub fn next_ban(
    rec: &AbuseRecord,
    ladder: &[BanLength],
    decay_ms: u64,
    now_ms: u64,
) -> (u32, Option<u64>) {
    let prior = if rec.offences > 0 && now_ms.saturating_sub(rec.last_offence_ms) > decay_ms {
        0
    } else {
        rec.offences
    };
    let offence = prior.saturating_add(1);
    let step = usize::try_from(prior)
        .unwrap_or(usize::MAX)
        .min(ladder.len().saturating_sub(1));
    let until = match ladder.get(step) {
        Some(BanLength::For(d)) => {
            Some(now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        }
        Some(BanLength::Permanent) | None => None,
    };
    (offence, until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn metrics(messages: u32, sym: u32, peers: u32, sizes: u32) -> WindowMetrics {
        WindowMetrics {
            messages,
            symmetry_percent: sym,
            peer_uniqueness_percent: peers,
            message_uniqueness_percent: sizes,
            ..WindowMetrics::default()
        }
    }

    #[test]
    fn a_spammer_is_banned_a_beginner_watched_and_a_chatter_left_alone() {
        let cfg = AbuseConfig::default();
        assert!(matches!(
            judge(&metrics(200, 0, 100, 1), &cfg, false),
            Outcome::Ban(_)
        ));
        assert!(matches!(
            judge(&metrics(12, 0, 100, 10), &cfg, false),
            Outcome::Watch(_)
        ));
        assert!(matches!(
            judge(&metrics(16, 0, 100, 10), &cfg, true),
            Outcome::Ban(_)
        ));
        assert_eq!(
            judge(&metrics(5000, 100, 1, 30), &cfg, false),
            Outcome::Nothing
        );
        assert_eq!(
            judge(&metrics(5000, 10, 100, 90), &cfg, false),
            Outcome::Nothing
        );
    }

    #[test]
    fn being_blocked_by_many_of_its_peers_bans_and_by_one_watches() {
        let cfg = AbuseConfig::default();
        let blocked = |blocks, peers| WindowMetrics {
            messages: 10,
            symmetry_percent: 100,
            blocks,
            distinct_peers: peers,
            block_rate_percent: blocks * 100 / peers,
            ..WindowMetrics::default()
        };
        assert!(matches!(
            judge(&blocked(3, 5), &cfg, false),
            Outcome::Ban(_)
        ));
        assert!(matches!(
            judge(&blocked(1, 2), &cfg, false),
            Outcome::Watch(_)
        ));
        assert_eq!(judge(&blocked(3, 100), &cfg, false), Outcome::Nothing);
    }

    #[test]
    fn bans_climb_the_ladder_and_history_decays() {
        let ladder = [
            BanLength::For(Duration::from_secs(1)),
            BanLength::For(Duration::from_secs(10)),
            BanLength::Permanent,
        ];
        let mut rec = AbuseRecord::default();
        assert_eq!(next_ban(&rec, &ladder, 100_000, 0), (1, Some(1_000)));
        rec.offences = 1;
        rec.last_offence_ms = 0;
        assert_eq!(next_ban(&rec, &ladder, 100_000, 5_000), (2, Some(15_000)));
        rec.offences = 7;
        assert_eq!(next_ban(&rec, &ladder, 100_000, 5_000), (8, None));
        assert_eq!(
            next_ban(&rec, &ladder, 100_000, 200_000),
            (1, Some(201_000))
        );
    }
}
