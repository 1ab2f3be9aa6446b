//! The abuse monitor: one actor, on its own arbiter (its store flushes and audit fsyncs never
//! stall sessions), that periodically judges every account active in the window
//! (`abuse.evaluate_every`) and, more often, the watch list (`abuse.watch_evaluate_every`).
//!
//! It owns the verdicts: it writes bans (with the ladder's length), watch-list entries and
//! each account's history to the store, makes them durable, then records each one in the
//! audit log (actor `monitor`) and the metrics. A ban takes effect at once: every
//! traffic-making request reads the ban from the store (`edge::session::abuse`). It does not
//! own the metrics (the send path counts them) nor lifting (the admin API).

mod handlers;
pub mod messages;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context};

use crate::audit::{AuditEntry, AuditLog};
use crate::config::{AbuseConfig, BanLength};
use crate::ids::AccountId;
use crate::store::{Ban, Store, StoreError, Verdict, Watch};
use messages::Evaluate;
use verdict::Outcome;

/// Who the monitor is in histories and the audit log.
pub const MONITOR: &str = "monitor";

/// The monitor's state.
pub struct AbuseMonitor {
    /// Where metrics are read and verdicts written.
    store: Store,
    /// `[abuse]`.
    cfg: AbuseConfig,
    /// The parsed `abuse.ban_ladder`.
    ladder: Vec<BanLength>,
    /// Every verdict is recorded here.
    audit: Arc<AuditLog>,
}

impl AbuseMonitor {
    pub fn new(store: Store, cfg: AbuseConfig, audit: Arc<AuditLog>) -> Self {
        Self {
            ladder: cfg.ladder(),
            store,
            cfg,
            audit,
        }
    }

    /// Starts the monitor on a new arbiter; stop that arbiter to stop it.
    pub fn spawn(self) -> actix_rt::Arbiter {
        let arbiter = actix_rt::Arbiter::new();
        Self::start_in_arbiter(&arbiter.handle(), move |_| self);
        arbiter
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.cfg.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// One evaluation round.
    fn evaluate(&mut self, watched_only: bool) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let window = self.window_ms();
        let mut decided = Vec::new();
        for (account, stats) in self.store.abuse_active()? {
            let mut rec = self.store.abuse_record(&account)?;
            let watched = rec.watch.is_some();
            if watched_only && !watched {
                continue;
            }
            if stats.is_idle(now, window) {
                self.store.abuse_stats_forget(&account, &stats)?;
                continue;
            }
            if rec.active_ban(now).is_some() {
                continue;
            }
            let m = stats.metrics(now, window);
            match verdict::judge(&m, &self.cfg, watched) {
                Outcome::Nothing => continue,
                Outcome::Watch(_) if watched => continue,
                Outcome::Watch(reason) => {
                    rec.watch = Some(Watch {
                        since_ms: now,
                        reason: reason.clone(),
                        by: MONITOR.into(),
                    });
                    rec.log(Verdict {
                        at_ms: now,
                        kind: "watch".into(),
                        detail: reason.clone(),
                        by: MONITOR.into(),
                    });
                    self.store.abuse_record_put(&account, &rec)?;
                    decided.push((account, "watch", reason, None, 0));
                }
                Outcome::Ban(reason) => {
                    let decay =
                        u64::try_from(self.cfg.history_decay.as_millis()).unwrap_or(u64::MAX);
                    let (offence, until) = verdict::next_ban(&rec, &self.ladder, decay, now);
                    rec.ban = Some(Ban {
                        since_ms: now,
                        until_ms: until,
                        offence,
                        reason: reason.clone(),
                    });
                    rec.offences = offence;
                    rec.last_offence_ms = now;
                    rec.watch = None;
                    rec.log(Verdict {
                        at_ms: now,
                        kind: "ban".into(),
                        detail: format!("offence {offence}, until {}: {reason}", until_text(until)),
                        by: MONITOR.into(),
                    });
                    self.store.abuse_record_put(&account, &rec)?;
                    // The ban answers for this window; the next offence is judged on new traffic.
                    self.store.abuse_stats_forget(&account, &stats)?;
                    decided.push((account, "ban", reason, until, offence));
                }
            }
        }
        if decided.is_empty() {
            return Ok(());
        }
        // Durable before anyone is told: a ban that was announced survives a crash.
        self.store.flush()?;
        for (account, kind, reason, until, offence) in decided {
            self.announce(&account, kind, &reason, until, offence);
        }
        refresh_gauges(&self.store, now);
        Ok(())
    }

    fn announce(
        &self,
        account: &AccountId,
        kind: &'static str,
        reason: &str,
        until: Option<u64>,
        offence: u32,
    ) {
        let mut target = BTreeMap::new();
        target.insert("account".to_owned(), account.to_string());
        target.insert("reason".to_owned(), reason.to_owned());
        if kind == "ban" {
            target.insert("until".to_owned(), until_text(until));
            target.insert("offence".to_owned(), offence.to_string());
            tracing::warn!(%account, offence, until = %until_text(until), reason, "Account banned for abuse.");
        } else {
            tracing::info!(%account, reason, "Account put on the abuse watch list.");
        }
        self.audit.record(&AuditEntry::now(
            MONITOR,
            format!("abuse {kind}"),
            target,
            "ok",
            0,
        ));
        crate::telemetry::metrics::abuse_verdict(kind);
    }
}

/// A ban's end as text: RFC 3339, or `permanent`.
pub fn until_text(until: Option<u64>) -> String {
    match until {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => crate::config::PERMANENT.into(),
    }
}

/// Sets the bans / watch-list gauges from the store.
pub fn refresh_gauges(store: &Store, now_ms: u64) {
    if let Ok(records) = store.abuse_records() {
        let bans = records
            .iter()
            .filter(|(_, r)| r.active_ban(now_ms).is_some())
            .count();
        let watched = records.iter().filter(|(_, r)| r.watch.is_some()).count();
        crate::telemetry::metrics::abuse_lists(bans, watched);
    }
}

impl Actor for AbuseMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        refresh_gauges(&self.store, crate::clock::now_ms());
        ctx.run_interval(self.cfg.evaluate_every, |_, ctx| {
            ctx.notify(Evaluate {
                watched_only: false,
            });
        });
        ctx.run_interval(self.cfg.watch_evaluate_every, |_, ctx| {
            ctx.notify(Evaluate { watched_only: true });
        });
    }
}
