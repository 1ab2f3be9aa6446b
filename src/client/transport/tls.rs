//! TLS for `https://` and `wss://` relays: rustls with the ring provider, trusting the public
//! roots plus an optional CA file (a relay with a self-signed or private-CA certificate).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::client::connection::ClientError;

fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca {
        let bad = |e: &dyn std::fmt::Display| ClientError::Tls(format!("{}: {e}", path.display()));
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Runs the TLS handshake with `host` over `stream`.
pub(super) async fn connect(
    stream: TcpStream,
    host: &str,
    ca: Option<&Path>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let cfg = client_config(ca)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Tls(format!("{host}: {e}")))?;
    TlsConnector::from(Arc::new(cfg))
        .connect(name, stream)
        .await
        .map_err(|e| ClientError::Tls(format!("handshake with {host}: {e}")))
}
