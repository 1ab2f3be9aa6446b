//! Where a device may ask to be woken: the push endpoint policy, checked when a device
//! registers an endpoint and again, on the resolved addresses, before every notification.
//!
//! An endpoint is an `http(s)` URL (parsed by the `http` crate). With `push.allowed_hosts`
//! empty (the default) any host is allowed except those that resolve to a loopback,
//! link-local, unspecified or multicast address: the relay's own machine and its link are not
//! a device's to point at (the admin API listens on loopback). The branch's LAN (private
//! ranges) is allowed, since a self-hosted ntfy server often lives there. A non-empty
//! `push.allowed_hosts` lists the only hosts (names or IP literals) endpoints may name, and
//! then those hosts are trusted whatever they resolve to. The relay's own listeners are
//! refused always.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Why an endpoint is refused. Each says what the device (or operator) can change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// Not an http(s) URL with a host. (device's fault)
    #[error("endpoint is not an http(s) URL with a host: {0}")]
    BadUrl(String),
    /// The host is not in the operator's list. (device's fault, or the operator's list)
    #[error("host {0} is not in push.allowed_hosts")]
    NotAllowed(String),
    /// The host resolves to a loopback address (this machine).
    #[error("host resolves to the loopback address {0}; push endpoints may not point at the relay's own machine (an operator can list the host in push.allowed_hosts)")]
    Loopback(IpAddr),
    /// The host resolves to a link-local address (169.254/16, fe80::/10).
    #[error("host resolves to the link-local address {0}; push endpoints may not point at link-local services (an operator can list the host in push.allowed_hosts)")]
    LinkLocal(IpAddr),
    /// The host resolves to an unspecified or multicast address.
    #[error("host resolves to {0}, which is not a unicast address")]
    NotUnicast(IpAddr),
    /// The endpoint is one of the relay's own listeners (its Noise, HTTP or admin port).
    #[error("endpoint {0} is the relay's own listener")]
    OwnListener(SocketAddr),
    /// The host name does not resolve.
    #[error("host {0} does not resolve")]
    Unresolvable(String),
}

/// The host and port an endpoint names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower case, IPv6 literals without brackets.
    pub host: String,
    pub port: u16,
}

/// The policy: the operator's list and the relay's own listener addresses.
#[derive(Debug, Default)]
pub struct PushPolicy {
    allowed: Vec<String>,
    own: Mutex<Vec<SocketAddr>>,
}

impl PushPolicy {
    /// `allowed_hosts` from `push.allowed_hosts`; `own` the listeners bound so far.
    pub fn new(allowed_hosts: &[String], own: Vec<SocketAddr>) -> Self {
        Self {
            allowed: allowed_hosts
                .iter()
                .map(|h| normal_host(h.trim()))
                .collect(),
            own: Mutex::new(own),
        }
    }

    /// Adds a listener bound after the policy was made (the HTTP listener).
    pub fn add_own(&self, addr: SocketAddr) {
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr);
    }

    /// Parses `url` and checks its host against the list (before any resolution).
    pub fn target(&self, url: &str) -> Result<Target, PushRefusal> {
        let bad = || PushRefusal::BadUrl(url.chars().take(80).collect());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            _ => return Err(bad()),
        };
        let host = normal_host(uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?);
        if !self.allowed.is_empty() && !self.allowed.contains(&host) {
            return Err(PushRefusal::NotAllowed(host));
        }
        Ok(Target { host, port })
    }

    /// Checks the addresses `target` resolved to.
    pub fn check_addrs(&self, target: &Target, addrs: &[SocketAddr]) -> Result<(), PushRefusal> {
        if addrs.is_empty() {
            return Err(PushRefusal::Unresolvable(target.host.clone()));
        }
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let listed = !self.allowed.is_empty();
        for a in addrs {
            let ip = canonical(a.ip());
            let is_own = own.iter().any(|o| {
                let oip = canonical(o.ip());
                o.port() == a.port()
                    && (oip == ip
                        || oip.is_unspecified()
                        || (oip.is_loopback() && ip.is_loopback()))
            });
            if is_own {
                return Err(PushRefusal::OwnListener(*a));
            }
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(PushRefusal::NotUnicast(ip));
            }
            if listed {
                continue;
            }
            if ip.is_loopback() {
                return Err(PushRefusal::Loopback(ip));
            }
            if is_link_local(ip) {
                return Err(PushRefusal::LinkLocal(ip));
            }
        }
        Ok(())
    }

    /// The whole check with the system resolver (blocking; the notifier's worker threads).
    pub fn check_blocking(&self, url: &str) -> Result<(), PushRefusal> {
        use std::net::ToSocketAddrs;
        let t = self.target(url)?;
        let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        self.check_addrs(&t, &addrs)
    }

    /// The whole check with tokio's resolver (sessions).
    pub async fn check(&self, url: &str) -> Result<(), PushRefusal> {
        let t = self.target(url)?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map(Iterator::collect)
            .unwrap_or_default();
        self.check_addrs(&t, &addrs)
    }
}

fn normal_host(h: &str) -> String {
    h.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_own_listeners_are_refused_and_the_lan_is_not() {
        let p = PushPolicy::new(&[], vec![addr("0.0.0.0:7700"), addr("127.0.0.1:7790")]);
        let t = p.target("http://ntfy.branch.lan/up").unwrap();
        assert_eq!(t.port, 80);
        assert!(p.check_addrs(&t, &[addr("192.168.1.20:80")]).is_ok());
        assert_eq!(
            p.check_addrs(&t, &[addr("127.0.0.1:80")]),
            Err(PushRefusal::Loopback("127.0.0.1".parse().unwrap()))
        );
        assert!(matches!(
            p.check_addrs(&t, &[addr("[::ffff:169.254.169.254]:80")]),
            Err(PushRefusal::LinkLocal(_))
        ));
        assert!(matches!(
            p.check_addrs(&t, &[addr("[fe80::1]:80")]),
            Err(PushRefusal::LinkLocal(_))
        ));
        assert!(matches!(
            p.check_addrs(&t, &[addr("10.0.0.5:7700")]),
            Err(PushRefusal::OwnListener(_))
        ));
        assert!(matches!(p.target("ftp://x/"), Err(PushRefusal::BadUrl(_))));
        assert!(matches!(p.target("http:///x"), Err(PushRefusal::BadUrl(_))));
    }

    #[test]
    fn an_allow_list_admits_only_its_hosts_and_never_the_relays_own_ports() {
        let p = PushPolicy::new(
            &["127.0.0.1".into(), "NTFY.lan".into()],
            vec![addr("127.0.0.1:7790")],
        );
        assert!(matches!(
            p.target("https://evil.example/x"),
            Err(PushRefusal::NotAllowed(h)) if h == "evil.example"
        ));
        let t = p.target("http://127.0.0.1:8080/up").unwrap();
        assert!(p.check_addrs(&t, &[addr("127.0.0.1:8080")]).is_ok());
        let t = p.target("http://127.0.0.1:7790/v1/accounts").unwrap();
        assert!(matches!(
            p.check_addrs(&t, &[addr("127.0.0.1:7790")]),
            Err(PushRefusal::OwnListener(_))
        ));
        assert!(p.target("http://ntfy.lan/x").is_ok());
    }
}
