//! Health, readiness, metrics, stats, blob usage, the audit log and online backups.

use std::collections::{BTreeMap, HashMap};
use std::io::Seek;

use actix_web::body::SizedStream;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::{only_params, query_number, AdminError, State};
use crate::telemetry::metrics;

/// Audit entries per answer when `limit` is not given, and the most one answer holds.
const DEFAULT_AUDIT: usize = 100;
const MAX_AUDIT: usize = 10_000;
/// Bytes read from the backup file per chunk of the response.
const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

/// Routes that need no token.
pub(super) fn configure_open(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(render_metrics));
}

/// Routes under `/v1`.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats", web::get().to(stats))
        .route("/blobs", web::get().to(blobs))
        .route("/audit", web::get().to(audit))
        .route("/backup", web::post().to(backup));
}

/// GET /healthz: the process is alive and answering.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

/// GET /readyz: 200 when the store is open and every listener is bound; 503 before that and
/// during shutdown (so a load balancer or systemd check stops sending work).
async fn readyz(state: State) -> HttpResponse {
    let verdict = readiness(
        state.ready.load(std::sync::atomic::Ordering::Acquire),
        state.ctx.shutdown.is_shutdown(),
        state.ctx.store.size_on_disk().is_ok(),
    );
    match verdict {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(why) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": why })),
    }
}

/// Ready only with every listener bound, no shutdown under way and the store answering;
/// otherwise the reason, most important first.
fn readiness(bound: bool, shutting_down: bool, store_ok: bool) -> Result<(), &'static str> {
    if shutting_down {
        Err("shutting down")
    } else if !store_ok {
        Err("store unavailable")
    } else if !bound {
        Err("starting")
    } else {
        Ok(())
    }
}

/// GET /metrics: Prometheus metrics (OpenMetrics text).
async fn render_metrics(state: State) -> Result<HttpResponse, AdminError> {
    let ctx = state.ctx.clone();
    let data_dir = state.data_dir.clone();
    let snapshot = web::block(move || -> Result<metrics::Snapshot, AdminError> {
        let counts = ctx.store.counts()?;
        let blobs = crate::backup::blob_usage(&data_dir)
            .map_err(|e| AdminError::Internal(format!("reading the blob directory: {e}")))?;
        Ok(metrics::Snapshot {
            queue_depth: counts.queued,
            accounts: counts.accounts,
            devices: counts.devices,
            blobs: blobs.files,
            blob_bytes: blobs.bytes,
        })
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(metrics::render(&snapshot)))
}

#[derive(Serialize)]
struct Stats {
    version: &'static str,
    uptime_seconds: u64,
    /// Open client connections by transport, and in total.
    connections: BTreeMap<&'static str, i64>,
    accounts: u64,
    devices: u64,
    groups: u64,
    queue_depth: u64,
    /// Device actors in memory (online devices and those recently active).
    live_devices: usize,
    store_bytes: u64,
}

/// GET /v1/stats: the relay at a glance.
async fn stats(state: State) -> Result<HttpResponse, AdminError> {
    let ctx = state.ctx.clone();
    let counts = web::block(move || ctx.store.counts())
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))??;
    let mut connections: BTreeMap<&'static str, i64> = metrics::TRANSPORTS
        .iter()
        .map(|t| (*t, metrics::open_connections(t)))
        .collect();
    let total = connections.values().sum();
    connections.insert("total", total);
    Ok(HttpResponse::Ok().json(Stats {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        connections,
        accounts: counts.accounts,
        devices: counts.devices,
        groups: counts.groups,
        queue_depth: counts.queued,
        live_devices: state.ctx.directory.live_count(),
        store_bytes: state.ctx.store.size_on_disk()?,
    }))
}

/// GET /v1/blobs: blob files and bytes held under `<data_dir>/blobs/` (temporary uploads
/// excluded).
async fn blobs(state: State) -> Result<HttpResponse, AdminError> {
    let dir = state.data_dir.clone();
    let usage = web::block(move || crate::backup::blob_usage(&dir))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .map_err(|e| AdminError::Internal(format!("reading the blob directory: {e}")))?;
    Ok(HttpResponse::Ok().json(usage))
}

/// GET /v1/audit?limit=N: the last N audit entries, oldest first.
async fn audit(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["limit"])?;
    let limit = query_number(&q, "limit", DEFAULT_AUDIT, 1..=MAX_AUDIT)?;
    let entries = state
        .audit
        .tail(limit)
        .map_err(|e| AdminError::Internal(format!("reading the audit log: {e}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": entries })))
}

/// POST /v1/backup: a consistent online backup (`backup` module docs give the format),
/// streamed as `application/x-tar` with its length, so a client can show progress.
async fn backup(state: State) -> Result<HttpResponse, AdminError> {
    let store = state.ctx.store.clone();
    let dir = state.data_dir.clone();
    let (file, manifest) = web::block(move || {
        // An unnamed file in the data directory: same disk, same permissions, gone on close.
        let mut file = tempfile::tempfile_in(&dir)?;
        let manifest = crate::backup::create(&store, &dir, std::io::BufWriter::new(&mut file))?;
        file.rewind()?;
        Ok::<_, crate::backup::BackupError>((file, manifest))
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(|e| AdminError::Internal(format!("creating the backup: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .len();
    tracing::info!(
        bytes = size,
        files = manifest.files.len(),
        "Backup created."
    );
    let name = format!("relaybox-backup-{}.tar", manifest.created_at_ms);
    let file = tokio::fs::File::from_std(file);
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut f = file?;
        let mut buf = vec![0u8; BACKUP_CHUNK_BYTES];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(web::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .body(SizedStream::new(size, chunks)))
}

#[cfg(test)]
mod tests {
    use super::readiness;

    #[test]
    fn readiness_needs_bound_listeners_a_store_and_no_shutdown() {
        assert_eq!(readiness(true, false, true), Ok(()));
        assert_eq!(readiness(false, false, true), Err("starting"));
        assert_eq!(readiness(true, true, true), Err("shutting down"));
        assert_eq!(readiness(true, false, false), Err("store unavailable"));
    }
}
