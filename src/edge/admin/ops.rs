//! Health, readiness, metrics, stats, blob usage, the audit log and online backups.

use std::collections::{BTreeMap, HashMap};
use std::io::Seek;

use actix_web::body::SizedStream;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::ErrorBody;
use super::{only_params, query_number, AdminError, State};
use crate::telemetry::metrics;

/// Audit entries per answer when `limit` is not given, and the most one answer holds.
const DEFAULT_AUDIT: usize = 100;
const MAX_AUDIT: usize = 10_000;
/// Bytes read from the backup file per chunk of the response.
const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

/// Routes that need no token.
pub(super) fn configure_open(cfg: &mut ServiceConfig) {
    cfg.service(healthz).service(readyz).service(render_metrics);
}

/// Routes under `/v1`.
pub(super) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(stats)
        .service(blob_usage)
        .service(purge_blob)
        .service(audit)
        .service(backup)
        .service(web_bundle);
}

/// The embedded browser companion.
#[derive(Serialize, ToSchema)]
struct WebBundle {
    version: &'static str,
    /// SHA-256 of the whole bundle (hex), as `relaybox --version` prints it.
    sha256: &'static str,
    /// `sha256sum` lines of the bundle's files.
    files: &'static str,
    /// Bytes the bundle adds to the binary.
    embedded_bytes: usize,
}

/// GET /v1/web: the embedded browser companion: its bundle SHA-256 (to publish, so users can
/// check the page they are served), its files' hashes and the bytes it adds to the binary.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The embedded browser bundle", body = WebBundle)),
)]
#[get("/web")]
async fn web_bundle() -> HttpResponse {
    HttpResponse::Ok().json(WebBundle {
        version: env!("CARGO_PKG_VERSION"),
        sha256: crate::web::BUNDLE_SHA256,
        files: crate::web::SHA256SUMS,
        embedded_bytes: crate::web::embedded_bytes(),
    })
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `alive` (`/healthz`); `ready`, `starting`, `shutting down` or `store unavailable`
    /// (`/readyz`).
    status: &'static str,
}

/// GET /healthz: the process is alive and answering.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)),
)]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "alive" })
}

/// GET /readyz: 200 when the store is open and every listener is bound; 503 before that and
/// during shutdown (so a load balancer or systemd check stops sending work).
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Health),
        (status = 503, description = "Starting, shutting down, or the store is unavailable", body = Health),
    ),
)]
#[get("/readyz")]
async fn readyz(state: State) -> HttpResponse {
    let verdict = readiness(
        state.ready.load(std::sync::atomic::Ordering::Acquire),
        state.ctx.shutdown.is_shutdown(),
        state.ctx.store.size_on_disk().is_ok(),
    );
    match verdict {
        Ok(()) => HttpResponse::Ok().json(Health { status: "ready" }),
        Err(why) => HttpResponse::ServiceUnavailable().json(Health { status: why }),
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
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Every metric of the relay", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
#[get("/metrics")]
async fn render_metrics(state: State) -> Result<HttpResponse, AdminError> {
    // The store's counts are kept up to date as things change: reading them is no scan.
    let counts = state.ctx.store.counts();
    let snapshot = metrics::Snapshot {
        queue_depth: counts.queued,
        accounts: counts.accounts,
        devices: counts.devices,
        blobs: counts.blobs,
        blob_bytes: counts.blob_bytes,
    };
    Ok(HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(metrics::render(&snapshot)))
}

/// The relay at a glance.
#[derive(Serialize, ToSchema)]
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
    /// The store's bytes on disk (read at most every 10 s).
    store_bytes: u64,
}

/// GET /v1/stats: the relay at a glance.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Counts, connections and uptime", body = Stats)),
)]
#[get("/stats")]
async fn stats(state: State) -> Result<HttpResponse, AdminError> {
    let counts = state.ctx.store.counts();
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
        store_bytes: state.ctx.store.size_on_disk_recent()?,
    }))
}

/// Blob usage.
#[derive(Serialize, ToSchema)]
struct BlobUsage {
    /// Blobs the store holds (uploaded, not yet expired or purged) and their bytes.
    stored_blobs: u64,
    stored_bytes: u64,
    /// Files under `<data_dir>/blobs/` (temporary uploads excluded) and their bytes: more
    /// than the store's figures only while the collector has orphans left to remove.
    files_on_disk: u64,
    bytes_on_disk: u64,
    /// With `?account=`: that account's usage against its quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<AccountBlobUsage>,
}

/// One account's blob usage.
#[derive(Serialize, ToSchema)]
struct AccountBlobUsage {
    account: String,
    bytes: u64,
    quota_bytes: u64,
}

/// GET /v1/blobs[?account=ACCOUNT]: blob usage from the store's records and from the disk.
#[utoipa::path(
    tag = "operations",
    params(
        ("account" = Option<String>, Query, description = "An account (E.164 phone number or @handle) whose usage to add", example = "+14155550101", pattern = "^(\\+[1-9][0-9]{7,14}|@[a-z0-9][a-z0-9.-]{0,31})$"),
    ),
    responses(
        (status = 200, description = "Blob usage", body = BlobUsage),
        (status = 400, description = "An unknown query parameter or a malformed account", body = ErrorBody),
    ),
)]
#[get("/blobs")]
async fn blob_usage(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["account"])?;
    let account = match q.get("account") {
        Some(a) => Some(
            crate::ids::AccountId::parse(a)
                .map_err(|e| AdminError::bad("account", e.to_string()))?,
        ),
        None => None,
    };
    let ctx = state.ctx.clone();
    let dir = state.data_dir.clone();
    let usage = web::block(move || -> Result<BlobUsage, AdminError> {
        let counts = ctx.store.counts();
        let (stored_blobs, stored_bytes) = (counts.blobs, counts.blob_bytes);
        let disk = crate::backup::blob_usage(&dir)
            .map_err(|e| AdminError::Internal(format!("reading the blob directory: {e}")))?;
        let account = match account {
            Some(a) => Some(AccountBlobUsage {
                bytes: ctx.store.blob_usage(&a)?,
                account: a.to_string(),
                quota_bytes: ctx.cfg.blobs.account_quota_bytes,
            }),
            None => None,
        };
        Ok(BlobUsage {
            stored_blobs,
            stored_bytes,
            files_on_disk: disk.files,
            bytes_on_disk: disk.bytes,
            account,
        })
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(usage))
}

/// DELETE /v1/blobs/{id}: purges a stored blob now. Its file goes, its bytes leave the
/// owner's quota, and its id answers 410 Gone from then on, so recipients recall it from
/// the sender (the same path as an expired blob).
#[utoipa::path(
    tag = "operations",
    params(("id" = String, Path, description = "The blob id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "The blob was purged", body = Purged),
        (status = 400, description = "Not a blob id", body = ErrorBody),
        (status = 404, description = "No such stored blob", body = ErrorBody),
    ),
)]
#[delete("/blobs/{id}")]
async fn purge_blob(state: State, id: web::Path<String>) -> Result<HttpResponse, AdminError> {
    let id = crate::blob::BlobId::parse(&id).map_err(|e| AdminError::bad("id", e.to_string()))?;
    let purged = crate::edge::http::blobs::purge(&state.ctx, &id)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    if !purged {
        return Err(AdminError::NotFound(format!(
            "no stored blob {id} (never uploaded, or already expired or purged)"
        )));
    }
    tracing::info!(blob = %id, "Blob purged by the operator.");
    Ok(HttpResponse::Ok().json(Purged {
        blob: id.to_string(),
        purged: true,
    }))
}

/// A purged blob.
#[derive(Serialize, ToSchema)]
struct Purged {
    blob: String,
    purged: bool,
}

/// The tail of the audit log.
#[derive(Serialize, ToSchema)]
struct AuditTail {
    /// Oldest first.
    entries: Vec<crate::audit::AuditEntry>,
}

/// GET /v1/audit?limit=N: the last N audit entries, oldest first.
#[utoipa::path(
    tag = "operations",
    params(("limit" = Option<u32>, Query, description = "How many entries (default 100)", minimum = 1, maximum = 10000)),
    responses(
        (status = 200, description = "The last entries of the audit log", body = AuditTail),
        (status = 400, description = "A bad or unknown query parameter", body = ErrorBody),
    ),
)]
#[get("/audit")]
async fn audit(
    state: State,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, AdminError> {
    only_params(&q, &["limit"])?;
    let limit = query_number(&q, "limit", DEFAULT_AUDIT, 1..=MAX_AUDIT)?;
    let entries = state
        .ctx
        .audit
        .tail(limit)
        .map_err(|e| AdminError::Internal(format!("reading the audit log: {e}")))?;
    Ok(HttpResponse::Ok().json(AuditTail { entries }))
}

/// POST /v1/backup: a consistent online backup (`backup` module docs give the format),
/// streamed as `application/x-tar` with its length, so a client can show progress.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "A tar archive of the data directory", body = String,
        content_type = "application/x-tar")),
)]
#[post("/backup")]
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
