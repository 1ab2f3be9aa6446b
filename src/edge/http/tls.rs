//! HTTPS for the public HTTP listener: the `[tls]` certificate chain and key, served with
//! rustls 0.23 and its ring provider (never aws-lc-rs: no C toolchain needed).

use std::sync::Arc;

use super::HttpError;
pub use crate::config::pem::{read_certs, read_key};
use crate::config::TlsConfig;

/// The rustls server configuration for `[tls]`: HTTP/1.1 only (the stream transport relies
/// on HTTP/1.1 chunked bodies).
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, HttpError> {
    let certs = read_certs(&tls.cert).map_err(HttpError::Tls)?;
    let key = read_key(&tls.key).map_err(HttpError::Tls)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpError::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
