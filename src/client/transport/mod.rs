//! How a client reaches the relay: Noise over TCP, WebSocket, or chunked HTTP (full duplex, or
//! split for proxies that buffer request bodies). Every transport carries the same Noise
//! messages; the [`Link`] hides which one is in use, so the Noise client logic in
//! `connection` is written once.
//!
//! A [`Target`] names the relay: its TCP address (`host:port`) and, for the HTTP transports,
//! the base URL of its HTTP listener (`http://host:7780` or `https://…`). `auto` tries TCP,
//! then WebSocket, then chunked HTTP.

mod http;
mod tcp;
mod tls;
mod ws;

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::connection::{ClientError, HANDSHAKE_TIMEOUT};

/// How long the first handshake reply may take over the full-duplex HTTP stream before the
/// client concludes a proxy buffers the request body and switches to split mode.
pub const DUPLEX_PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TransportKind {
    /// Noise over TCP (the native transport).
    #[default]
    Tcp,
    /// WebSocket at `<http>/v1/ws`.
    Ws,
    /// Chunked HTTP at `<http>/v1/stream`: full duplex, falling back to split mode when a
    /// proxy holds the request body back.
    Http,
    /// Chunked HTTP in split mode only (a chunked GET down, short POSTs up).
    HttpSplit,
    /// TCP, then WebSocket, then chunked HTTP: the first that connects.
    Auto,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ws => "ws",
            Self::Http => "http",
            Self::HttpSplit => "http-split",
            Self::Auto => "auto",
        }
    }

    /// Parses the saved name (as written by [`TransportKind::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tcp, Self::Ws, Self::Http, Self::HttpSplit, Self::Auto]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where and how to reach the relay.
#[derive(Debug, Clone)]
pub struct Target {
    /// The relay's TCP address, `host:port`.
    pub tcp: String,
    /// Base URL of the relay's HTTP listener (`http://host:port` or `https://host:port`).
    pub http: Option<String>,
    pub kind: TransportKind,
    /// Extra CA certificate (PEM) trusted for `https://` relays, besides the public roots.
    pub ca: Option<PathBuf>,
}

impl Target {
    /// Noise over TCP to `addr`.
    pub fn tcp(addr: &str) -> Self {
        Self {
            tcp: addr.to_owned(),
            http: None,
            kind: TransportKind::Tcp,
            ca: None,
        }
    }

    /// This target with another transport.
    pub fn with_kind(&self, kind: TransportKind) -> Self {
        Self {
            kind,
            ..self.clone()
        }
    }

    /// Whether a duplex stream whose handshake stalls should be retried in split mode.
    pub(crate) fn split_fallback(&self) -> bool {
        matches!(self.kind, TransportKind::Http | TransportKind::Auto)
    }

    fn http_base(&self) -> Result<BaseUrl, ClientError> {
        let url = self.http.as_deref().ok_or_else(|| {
            ClientError::BadUrl(format!(
                "the {} transport needs the relay's HTTP URL (--http http://host:port)",
                self.kind.as_str()
            ))
        })?;
        BaseUrl::parse(url)
    }
}

/// A parsed `http://` or `https://` base URL.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::BadUrl(format!("{url}: {why}"));
        let uri: ::http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            tls,
            host,
            port,
            prefix,
        })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn path(&self, p: &str) -> String {
        format!("{}{p}", self.prefix)
    }
}

/// A byte stream: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Opens a TCP connection (with TLS when the URL says so) to the HTTP listener.
async fn connect_http(
    base: &BaseUrl,
    ca: Option<&std::path::Path>,
) -> Result<Box<dyn Io>, ClientError> {
    let addr = base.authority();
    let stream = connect_tcp(&addr, None).await?;
    if !base.tls {
        return Ok(Box::new(stream));
    }
    let tls = tls::connect(stream, &base.host, ca).await?;
    Ok(Box::new(tls))
}

/// A TCP connection to `addr` (optionally from a chosen local address), `TCP_NODELAY` set.
pub(crate) async fn connect_tcp(
    addr: &str,
    local: Option<std::net::IpAddr>,
) -> Result<TcpStream, ClientError> {
    let connect = async {
        match local {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let remote = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
                })?;
                let socket = if remote.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
                socket.connect(remote).await
            }
        }
    };
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Timeout("connect"))?
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection to the relay carrying whole Noise messages, whatever the transport.
pub(crate) enum Link {
    Tcp(tcp::TcpLink),
    Ws(ws::WsLink),
    Duplex(http::DuplexLink),
    Split(http::SplitLink),
}

impl Link {
    /// Opens a link to `target` (for `auto`, the first transport that connects), within the
    /// handshake deadline.
    pub(crate) async fn open(
        target: &Target,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::open_now(target, local))
            .await
            .map_err(|_| ClientError::Timeout("connect"))?
    }

    async fn open_now(
        target: &Target,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        match target.kind {
            TransportKind::Tcp => Ok(Self::Tcp(tcp::TcpLink::open(&target.tcp, local).await?)),
            TransportKind::Ws => {
                let base = target.http_base()?;
                Ok(Self::Ws(
                    ws::WsLink::open(&base, target.ca.as_deref()).await?,
                ))
            }
            TransportKind::Http => {
                let base = target.http_base()?;
                Ok(Self::Duplex(
                    http::DuplexLink::open(&base, target.ca.as_deref()).await?,
                ))
            }
            TransportKind::HttpSplit => {
                let base = target.http_base()?;
                Ok(Self::Split(
                    http::SplitLink::open(&base, target.ca.as_deref()).await?,
                ))
            }
            TransportKind::Auto => {
                let tcp = tcp::TcpLink::open(&target.tcp, local).await;
                let tcp_err = match tcp {
                    Ok(l) => return Ok(Self::Tcp(l)),
                    Err(e) => e,
                };
                let Some(_) = target.http else {
                    return Err(tcp_err);
                };
                tracing::debug!(error = %tcp_err, "TCP failed; trying WebSocket.");
                let base = target.http_base()?;
                match ws::WsLink::open(&base, target.ca.as_deref()).await {
                    Ok(l) => return Ok(Self::Ws(l)),
                    Err(e) => tracing::debug!(error = %e, "WebSocket failed; trying chunked HTTP."),
                }
                Ok(Self::Duplex(
                    http::DuplexLink::open(&base, target.ca.as_deref()).await?,
                ))
            }
        }
    }

    /// Which transport this link uses.
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Self::Tcp(_) => TransportKind::Tcp,
            Self::Ws(_) => TransportKind::Ws,
            Self::Duplex(_) => TransportKind::Http,
            Self::Split(_) => TransportKind::HttpSplit,
        }
    }

    /// Sends one Noise message.
    pub(crate) async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        match self {
            Self::Tcp(l) => l.write(payload).await,
            Self::Ws(l) => l.write(payload).await,
            Self::Duplex(l) => l.write(payload).await,
            Self::Split(l) => l.write(payload).await,
        }
    }

    /// The next Noise message. Cancel-safe.
    pub(crate) async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        match self {
            Self::Tcp(l) => l.read().await,
            Self::Ws(l) => l.read().await,
            Self::Duplex(l) => l.read().await,
            Self::Split(l) => l.read().await,
        }
    }

    /// Reads the next message within `t`.
    pub(crate) async fn read_timeout(&mut self, t: Duration) -> Result<Vec<u8>, ClientError> {
        tokio::time::timeout(t, self.read())
            .await
            .map_err(|_| ClientError::Timeout("handshake"))?
    }
}
