//! Blob routes on the public HTTP listener: upload and download with the capability URLs the
//! session hands out (`blob::capability`). Every refusal has its own status and reason code,
//! decided in one place ([`BlobHttpError`]); the body is `{"error": code, "message": text}`.
//!
//! | refusal                                   | status | `error`              |
//! |-------------------------------------------|--------|----------------------|
//! | id not 64 lowercase hex                   | 400    | `bad_blob_id`        |
//! | id with `..`, `/`, `\`, `%`               | 400    | `path_traversal`     |
//! | `seg` not a segment of the blob           | 400    | `bad_segment`        |
//! | body shorter than declared                | 400    | `short_body`         |
//! | signature missing                         | 403    | `missing_signature`  |
//! | signature wrong                           | 403    | `bad_signature`      |
//! | signature expired                         | 403    | `signature_expired`  |
//! | URL for the other method                  | 403    | `wrong_method`       |
//! | never uploaded (or upload URL lapsed)     | 404    | `unknown_blob`       |
//! | expired or purged                         | 410    | `gone`               |
//! | larger than declared or than the limit    | 413    | `too_large`          |
//! | content does not hash to the id           | 422    | `hash_mismatch`      |
//! | Range outside the blob                    | 416    | `range_not_satisfiable` |
//! | account quota exceeded                    | 507    | `quota_exceeded`     |

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue, Range};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::blob::capability::{self, CapabilityError, Presented};
use crate::blob::{gc, BadBlobId, BlobId, Method, WriteError};
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::{BlobRecord, BlobScope, BlobState, CommitOutcome, StoreError};

/// Registers the blob routes (called from the HTTP app factory).
pub fn configure(cfg: &mut web::ServiceConfig) {
    // `{id:.*}` takes the rest of the path, so that `..` and `/` reach the id check and get
    // their own answer instead of a generic 404.
    cfg.service(
        web::resource("/v1/blobs/{id:.*}")
            .route(web::put().to(upload_route))
            .route(web::get().to(download_route))
            .route(web::head().to(download_route)),
    );
}

/// Why a blob request was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobHttpError {
    #[error(transparent)]
    BadId(#[from] BadBlobId),
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error("segment {0} does not exist in this blob")]
    BadSegment(String),
    #[error("this account may not fetch this blob (it was not sent to it, or it left the group it was sent to)")]
    NotAllowed,
    #[error("no such blob")]
    Unknown,
    #[error("this blob expired or was purged; ask its sender to send it again")]
    Gone,
    #[error("{0}")]
    TooLarge(String),
    #[error("account quota exceeded: {used} of {quota} bytes used, {size} more uploaded")]
    Quota { used: u64, quota: u64, size: u64 },
    #[error("range not satisfiable for a blob of {0} bytes")]
    Range(u64),
    #[error(transparent)]
    Write(WriteError),
    /// The relay's disk or store failed. (the relay's fault)
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for BlobHttpError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<std::io::Error> for BlobHttpError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<WriteError> for BlobHttpError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Oversize { .. } => Self::TooLarge(e.to_string()),
            WriteError::Io(io) => Self::Internal(io.to_string()),
            other => Self::Write(other),
        }
    }
}

impl BlobHttpError {
    /// The one place that decides statuses and reason codes.
    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadId(BadBlobId::Traversal) => (StatusCode::BAD_REQUEST, "path_traversal"),
            Self::BadId(BadBlobId::Malformed) => (StatusCode::BAD_REQUEST, "bad_blob_id"),
            Self::Capability(c) => (
                StatusCode::FORBIDDEN,
                match c {
                    CapabilityError::Missing(_) => "missing_signature",
                    CapabilityError::BadSignature => "bad_signature",
                    CapabilityError::Expired => "signature_expired",
                    CapabilityError::WrongMethod { .. } => "wrong_method",
                },
            ),
            Self::NotAllowed => (StatusCode::FORBIDDEN, "not_allowed"),
            Self::BadSegment(_) => (StatusCode::BAD_REQUEST, "bad_segment"),
            Self::Unknown => (StatusCode::NOT_FOUND, "unknown_blob"),
            Self::Gone => (StatusCode::GONE, "gone"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Quota { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            Self::Range(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            Self::Write(WriteError::HashMismatch { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch")
            }
            Self::Write(WriteError::Short { .. }) => (StatusCode::BAD_REQUEST, "short_body"),
            Self::Write(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl ResponseError for BlobHttpError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        let mut res = HttpResponse::build(status);
        if let Self::Range(len) = self {
            res.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
        }
        res.json(serde_json::json!({ "error": code, "message": self.to_string() }))
    }
}

type Ctx = web::Data<Arc<RelayCtx>>;

/// Logs a refusal once, at the level its fault calls for, with who asked.
fn logged<T>(req: &HttpRequest, r: Result<T, BlobHttpError>) -> Result<T, BlobHttpError> {
    if let Err(e) = &r {
        let (status, code) = e.code();
        let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        // 507 (quota) is a 5xx by class but the client's doing; only `Internal` is ours.
        if matches!(e, BlobHttpError::Internal(_)) {
            tracing::error!(%peer, error = ?e, "Blob request failed on the relay side.");
        } else {
            tracing::info!(%peer, method = %req.method(), status = status.as_u16(), code, reason = %e, "Blob request refused.");
        }
    }
    r
}

async fn upload_route(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, BlobHttpError> {
    let r = upload(ctx, &req, body).await;
    logged(&req, r)
}

async fn download_route(ctx: Ctx, req: HttpRequest) -> Result<HttpResponse, BlobHttpError> {
    let r = download(ctx, &req).await;
    logged(&req, r)
}

/// Parses the id and checks the capability, before anything touches the disk.
fn authorise(
    ctx: &RelayCtx,
    req: &HttpRequest,
    used: Method,
) -> Result<(BlobId, capability::Capability, Presented), BlobHttpError> {
    let raw = req.match_info().get("id").unwrap_or_default();
    let id = BlobId::parse(raw)?;
    let presented = web::Query::<Presented>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| CapabilityError::BadSignature)?;
    let cap = capability::verify(
        &ctx.blobs.url_key,
        &id,
        used,
        &presented,
        crate::clock::now_ms(),
    )?;
    Ok((id, cap, presented))
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// PUT /v1/blobs/{id}?m=put&dev=…&exp=…&sig=…: the upload of a pending blob.
async fn upload(
    ctx: Ctx,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, BlobHttpError> {
    let (id, cap, _) = authorise(&ctx, req, Method::Put)?;
    let cfg = &ctx.cfg.blobs;
    let declared = match ctx.store.blob(&id)? {
        None => return Err(BlobHttpError::Unknown),
        Some(BlobRecord {
            state: BlobState::Gone { .. },
            ..
        }) => return Err(BlobHttpError::Gone),
        Some(BlobRecord {
            state: BlobState::Stored { .. },
            size,
            ..
        }) => {
            // Content addressed: the same bytes are stored already. An account that holds
            // them (`store::blob_access`) needs no upload, unless the file was lost. Anyone
            // else uploads them: the body must hash to the id, which proves the caller has the
            // content, and is answered as any upload, so nobody learns what others store. The
            // quota is charged to the first uploader only.
            let held = ctx.store.blob_may_fetch(&id, &cap.device.account)?;
            let intact = ctx.blobs.files.len(&id).await == Some(size);
            if held && intact {
                return Ok(HttpResponse::Ok()
                    .json(serde_json::json!({ "blob": id.as_str(), "size": size })));
            }
            let written = ctx.blobs.files.write(&id, size, body).await?;
            uploaded_by(&ctx, &id, &cap.device.account).await?;
            if !intact {
                tracing::info!(blob = %id, size = written, "Lost blob file restored by a new upload.");
            }
            return Ok(HttpResponse::Created()
                .json(serde_json::json!({ "blob": id.as_str(), "size": written })));
        }
        Some(rec) => rec.size,
    };
    if declared > cfg.max_blob_bytes {
        return Err(BlobHttpError::TooLarge(format!(
            "blob of {declared} bytes is larger than the relay's limit of {} bytes",
            cfg.max_blob_bytes
        )));
    }
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = content_length {
        if len > declared {
            return Err(BlobHttpError::TooLarge(format!(
                "upload of {len} bytes is larger than its declared {declared} bytes"
            )));
        }
    }
    // The upload's URL reserved its quota (RequestUpload); a URL whose reservation is gone
    // (another account completed the same content meanwhile, then it expired) is checked
    // against what the account has now.
    let reserved = ctx.store.blob_reservation(&id, &cap.device.account)?;
    if reserved.is_none_or(|r| r < declared) {
        let used = ctx.store.blob_usage(&cap.device.account)?;
        let extra = declared - reserved.unwrap_or(0);
        if used.saturating_add(extra) > cfg.account_quota_bytes {
            return Err(BlobHttpError::Quota {
                used,
                quota: cfg.account_quota_bytes,
                size: declared,
            });
        }
    }
    let size = ctx.blobs.files.write(&id, declared, body).await?;
    let now = crate::clock::now_ms();
    let expires = now.saturating_add(ms(cfg.retention));
    let outcome = ctx.store.blob_commit(
        &id,
        &cap.device,
        size,
        now,
        expires,
        cfg.account_quota_bytes,
    )?;
    match outcome {
        CommitOutcome::Stored => crate::telemetry::metrics::blob_stored(size),
        CommitOutcome::QuotaExceeded { used } => {
            ctx.blobs.files.remove(&id).await?;
            return Err(BlobHttpError::Quota {
                used,
                quota: cfg.account_quota_bytes,
                size,
            });
        }
        CommitOutcome::NotPending => {
            // Stored meanwhile by a concurrent upload of the same content: keep the file.
            // Otherwise the pending record lapsed during the upload.
            if !matches!(
                ctx.store.blob(&id)?.map(|r| r.state),
                Some(BlobState::Stored { .. })
            ) {
                ctx.blobs.files.remove(&id).await?;
                return Err(BlobHttpError::Unknown);
            }
        }
    }
    uploaded_by(&ctx, &id, &cap.device.account).await?;
    tracing::info!(blob = %id, size, device = %cap.device, "Blob stored.");
    Ok(HttpResponse::Created().json(serde_json::json!({ "blob": id.as_str(), "size": size })))
}

/// `account` uploaded the content of `id` (its bytes hashed to the id): it may fetch it from
/// now on, durably before the upload is answered.
async fn uploaded_by(ctx: &Ctx, id: &BlobId, account: &AccountId) -> Result<(), BlobHttpError> {
    ctx.store.blob_grant(id, BlobScope::Account(account))?;
    ctx.durability
        .wait()
        .await
        .map_err(|e| BlobHttpError::Internal(e.to_string()))
}

/// GET /v1/blobs/{id}?m=get&dev=…&exp=…&sig=…[&seg=N]: the blob, or one segment of it.
/// A single `Range` is honoured (206, or 416 when unsatisfiable); the ETag is the id.
async fn download(ctx: Ctx, req: &HttpRequest) -> Result<HttpResponse, BlobHttpError> {
    let (id, cap, _) = authorise(&ctx, req, Method::Get)?;
    // Checked again at fetch time: a member removed from the group since the URL was signed
    // has lost the right.
    if !ctx.store.blob_may_fetch(&id, &cap.device.account)? {
        return Err(BlobHttpError::NotAllowed);
    }
    let rec = match ctx.store.blob(&id)? {
        None
        | Some(BlobRecord {
            state: BlobState::Pending { gone_at_ms: None },
            ..
        }) => return Err(BlobHttpError::Unknown),
        Some(BlobRecord {
            state:
                BlobState::Gone { .. }
                | BlobState::Pending {
                    gone_at_ms: Some(_),
                },
            ..
        }) => return Err(BlobHttpError::Gone),
        Some(rec) => rec,
    };
    // A record without its file (a damaged disk, a partial restore) is lost: 410, like an
    // expired blob, so that the receiver recalls it from the sender.
    if ctx.blobs.files.len(&id).await != Some(rec.size) {
        tracing::warn!(blob = %id, "Blob file missing or damaged; answering Gone.");
        return Err(BlobHttpError::Gone);
    }
    // Content addressed and immutable: a cached copy under this ETag is always current.
    let etag = format!("\"{id}\"");
    let cached = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if cached {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    // The part of the file addressed: one segment, or all of it.
    let (base, len) = match segment_param(req.query_string()) {
        None => (0, rec.size),
        Some(raw) => {
            let n: usize = raw
                .parse()
                .map_err(|_| BlobHttpError::BadSegment(raw.clone()))?;
            let Some(&len) = rec.segments.get(n) else {
                return Err(BlobHttpError::BadSegment(raw));
            };
            let base: u64 = rec.segments[..n].iter().sum();
            (base, len)
        }
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Range>().ok());
    let (status, start, end) = match range {
        Some(Range::Bytes(specs)) if specs.len() == 1 => {
            let (from, to) = specs[0]
                .to_satisfiable_range(len)
                .ok_or(BlobHttpError::Range(len))?;
            (StatusCode::PARTIAL_CONTENT, from, to)
        }
        // Several ranges, or another unit: RFC 9110 lets a server send the whole.
        _ => (StatusCode::OK, 0, len.saturating_sub(1)),
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let mut res = HttpResponse::build(status);
    res.insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=31536000, immutable"),
        ))
        .content_type("application/octet-stream")
        .no_chunking(count);
    if status == StatusCode::PARTIAL_CONTENT {
        res.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
    }
    if req.method() == actix_web::http::Method::HEAD {
        // A sized body that is never sent: the server answers HEAD with headers only, and
        // Content-Length says what a GET would return.
        let none = futures::stream::empty::<Result<web::Bytes, std::io::Error>>();
        return Ok(res.body(actix_web::body::SizedStream::new(count, none)));
    }
    let stream = ctx.blobs.files.read_range(&id, base + start, count).await?;
    Ok(res.streaming(futures::StreamExt::map(stream, |c| c.map(web::Bytes::from))))
}

/// The raw `seg` query parameter, if present.
fn segment_param(query: &str) -> Option<String> {
    web::Query::<SegQuery>::from_query(query)
        .ok()
        .and_then(|q| q.into_inner().seg)
}

#[derive(serde::Deserialize)]
struct SegQuery {
    seg: Option<String>,
}

/// Operator purge of one blob (its id then answers 410); for the admin API.
pub async fn purge(ctx: &RelayCtx, id: &BlobId) -> Result<bool, gc::GcError> {
    gc::purge(
        &ctx.store,
        &ctx.blobs.files,
        id,
        gc::tombstone_ms(&ctx.cfg.blobs),
    )
    .await
}
