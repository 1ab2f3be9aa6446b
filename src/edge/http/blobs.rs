//! Blob routes (capability URLs for upload and download). Owned by the blob store work; the
//! HTTP server registers them with one `.configure(blobs::configure)` line.

use actix_web::web;

/// Registers the blob routes on the public HTTP app.
pub fn configure(_cfg: &mut web::ServiceConfig) {}
