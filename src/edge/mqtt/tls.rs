//! TLS to the broker: a rustls `ClientConfig` on the ring provider (no aws-lc), trusting the
//! configured CA (or the bundled web roots) and presenting a client certificate if configured.

use std::sync::Arc;

use anyhow::Context as _;
use rumqttc::TlsConfiguration;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

pub fn client_config(cfg: &MqttConfig) -> anyhow::Result<TlsConfiguration> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if cfg.tls_ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let certs = CertificateDer::pem_file_iter(&cfg.tls_ca_file)
            .with_context(|| format!("reading mqtt.tls_ca_file {}", cfg.tls_ca_file))?;
        for c in certs {
            let c = c.with_context(|| format!("parsing mqtt.tls_ca_file {}", cfg.tls_ca_file))?;
            roots
                .add(c)
                .with_context(|| format!("adding the CA of {}", cfg.tls_ca_file))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = if cfg.tls_client_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain = CertificateDer::pem_file_iter(&cfg.tls_client_cert_file)
            .with_context(|| format!("reading {}", cfg.tls_client_cert_file))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cfg.tls_client_cert_file))?;
        let key = PrivateKeyDer::from_pem_file(&cfg.tls_client_key_file)
            .with_context(|| format!("reading {}", cfg.tls_client_key_file))?;
        builder
            .with_client_auth_cert(chain, key)
            .context("the client certificate and key do not match")?
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
