//! Blob requests: hand out signed upload and download URLs. The bytes themselves travel over
//! HTTP (`edge::http::blobs`); here the relay checks the size limit, the account's quota and
//! the segment index before anything is uploaded, and who may fetch a blob: the rights that
//! `Send.blobs` passes on (`store::blob_access`).

use super::{Caller, RequestError};
use crate::blob::{capability, BlobId, Method, MAX_SEGMENTS};
use crate::edge::RelayCtx;
use crate::ids::AccountId;
use crate::store::{BlobScope, PendingOutcome};
use crate::wire::messages::{server_frame, BlobUrl, RequestDownload, RequestUpload};

type Body = server_frame::Body;

/// Most blobs one Send may name (`Send.blobs`).
pub const MAX_SEND_BLOBS: usize = 16;

/// Why a blob request is refused. (client's fault, or the operator's choice)
#[derive(Debug, thiserror::Error)]
pub enum BlobRefusal {
    #[error("this relay does not store blobs")]
    Disabled,
    #[error("blob of {size} bytes is larger than the relay's limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("account quota exceeded: {used} of {quota} bytes used or reserved by uploads in progress, {size} more requested")]
    Quota { used: u64, quota: u64, size: u64 },
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The refusal of a blob this account holds no right to; the same whether the relay holds the
/// content or not.
fn not_sent(id: &BlobId) -> String {
    format!(
        "blob {id} was not sent to this account: only the account that uploaded it and the recipients of a message naming it in Send.blobs may fetch it"
    )
}

/// The blobs a Send names (`Send.blobs`), each of which the sending account may pass on.
pub(super) fn shared(
    ctx: &RelayCtx,
    me: &AccountId,
    names: &[String],
) -> Result<Vec<BlobId>, RequestError> {
    if names.len() > MAX_SEND_BLOBS {
        return Err(RequestError::invalid(format!(
            "a send names at most {MAX_SEND_BLOBS} blobs, not {}",
            names.len()
        )));
    }
    let mut ids = Vec::with_capacity(names.len());
    for n in names {
        let id = blob_id(n)?;
        if !ctx.store.blob_may_fetch(&id, me)? {
            return Err(RequestError::NotAllowed(format!(
                "this account cannot pass on blob {id}: it neither uploaded it nor was sent it"
            )));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Passes the right to fetch `blobs` to each of `scopes` (before the send's barrier, so the
/// right is as durable as the message that carries it).
pub(super) fn grant(
    ctx: &RelayCtx,
    blobs: &[BlobId],
    scopes: &[BlobScope<'_>],
) -> Result<(), RequestError> {
    for id in blobs {
        for &scope in scopes {
            ctx.store.blob_grant(id, scope)?;
        }
    }
    Ok(())
}

fn blob_id(s: &str) -> Result<BlobId, RequestError> {
    BlobId::parse(s).map_err(|e| RequestError::invalid(e.to_string()))
}

/// RequestUpload: limit, quota and segment checks, then a signed PUT URL.
pub(super) fn request_upload(
    ctx: &RelayCtx,
    caller: &Caller,
    r: RequestUpload,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?;
    let cfg = &ctx.cfg.blobs;
    if !cfg.enabled {
        return Err(BlobRefusal::Disabled.into());
    }
    let id = blob_id(&r.sha256)?;
    if r.size == 0 {
        return Err(RequestError::invalid("a blob has at least one byte"));
    }
    if r.size > cfg.max_blob_bytes {
        return Err(BlobRefusal::TooLarge {
            size: r.size,
            max: cfg.max_blob_bytes,
        }
        .into());
    }
    if r.segments.len() > MAX_SEGMENTS {
        return Err(RequestError::invalid(format!(
            "a blob has at most {MAX_SEGMENTS} segments"
        )));
    }
    if !r.segments.is_empty() {
        let sum = r.segments.iter().try_fold(0u64, |a, &s| a.checked_add(s));
        if sum != Some(r.size) || r.segments.contains(&0) {
            return Err(RequestError::invalid(
                "segment sizes must be non-zero and add up to the blob's size",
            ));
        }
    }
    ctx.store.ensure_space_for(r.size)?;
    let expires_ms = crate::clock::now_ms().saturating_add(ms(cfg.url_ttl));
    // The pending record outlives the URL by one more TTL, so that an upload started just
    // before the URL expired is not orphaned while it streams.
    let lapses_ms = expires_ms.saturating_add(ms(cfg.url_ttl));
    // The upload reserves its bytes of the quota now, so that uploads running at once cannot
    // together pass it; the reservation lapses with the pending record.
    let outcome = ctx.store.blob_pending(
        &id,
        &me.account,
        r.size,
        &r.segments,
        lapses_ms,
        cfg.account_quota_bytes,
    )?;
    if let PendingOutcome::QuotaExceeded { used } = outcome {
        return Err(BlobRefusal::Quota {
            used,
            quota: cfg.account_quota_bytes,
            size: r.size,
        }
        .into());
    }
    // Stored for this account (it uploaded it, or was sent it), unless its file was lost:
    // then the upload puts it back. Anyone else uploads it too, so the answer never says
    // whether someone else stored the content.
    let stored = outcome == PendingOutcome::AlreadyStored
        && ctx.store.blob_may_fetch(&id, &me.account)?
        && ctx
            .blobs
            .files
            .path(&id)
            .metadata()
            .is_ok_and(|m| m.len() == r.size);
    let url = capability::sign(&ctx.blobs.url_key, Method::Put, &id, me, expires_ms);
    Ok(Body::BlobUrl(BlobUrl {
        blob: id.to_string(),
        url,
        expires_ms,
        stored,
    }))
}

/// RequestDownload: a signed GET URL for a blob this account may fetch (`store::blob_access`);
/// whether the blob is still there (or gone) is answered over HTTP.
pub(super) fn request_download(
    ctx: &RelayCtx,
    caller: &Caller,
    r: RequestDownload,
) -> Result<Body, RequestError> {
    let me = super::requests::device_of(caller)?;
    let id = blob_id(&r.blob)?;
    if !ctx.store.blob_may_fetch(&id, &me.account)? {
        return Err(RequestError::NotAllowed(not_sent(&id)));
    }
    let expires_ms = crate::clock::now_ms().saturating_add(ms(ctx.cfg.blobs.url_ttl));
    let url = capability::sign(&ctx.blobs.url_key, Method::Get, &id, me, expires_ms);
    Ok(Body::BlobUrl(BlobUrl {
        blob: id.to_string(),
        url,
        expires_ms,
        stored: false,
    }))
}
