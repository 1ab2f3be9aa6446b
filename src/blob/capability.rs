//! Capability URLs: the relay signs (method, blob, device, expiry) with HMAC-SHA256 under a
//! secret only it holds, and hands the URL out over the Noise session. Whoever presents the
//! URL over HTTP may do that one thing with that one blob until the expiry; nothing else.
//!
//! # Format
//!
//! `/v1/blobs/{id}?m=put|get&dev={account}.{device}&exp={unix ms}&sig={hex hmac}` where the
//! HMAC covers `relaybox-blob-v1\n{m}\n{id}\n{dev}\n{exp}`. The account's `+` is written
//! `%2B` so that query decoding does not turn it into a space.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::BlobId;
use crate::ids::{AccountId, DeviceId};

/// Domain separation: these signatures can be confused with no other HMAC of the relay.
const DOMAIN: &str = "relaybox-blob-v1";

/// What a capability allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Put,
    Get,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "put" => Some(Self::Put),
            "get" => Some(Self::Get),
            _ => None,
        }
    }
}

/// A verified capability: who may do what to which blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub method: Method,
    pub blob: BlobId,
    pub device: DeviceId,
    pub expires_ms: u64,
}

/// Why a presented capability is refused. Each is the presenter's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// A query parameter is absent.
    #[error("missing signature parameter `{0}`")]
    Missing(&'static str),
    /// A parameter does not parse, or the HMAC does not match.
    #[error("bad signature")]
    BadSignature,
    /// The signature was valid but its time has passed.
    #[error("signature expired")]
    Expired,
    /// A valid capability for another method (a download URL used to upload, or back).
    #[error("this URL allows {allowed}, not {used}")]
    WrongMethod {
        allowed: &'static str,
        used: &'static str,
    },
}

fn mac(secret: &[u8; 32], method: Method, blob: &BlobId, dev: &str, exp: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so a 32-byte key cannot be refused.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(format!("{DOMAIN}\n{}\n{blob}\n{dev}\n{exp}", method.as_str()).as_bytes());
    m
}

fn dev_param(d: &DeviceId) -> String {
    format!("{}.{}", d.account, d.device)
}

/// The path and query of a signed URL.
pub fn sign(
    secret: &[u8; 32],
    method: Method,
    blob: &BlobId,
    device: &DeviceId,
    expires_ms: u64,
) -> String {
    let dev = dev_param(device);
    let sig = hex::encode(
        mac(secret, method, blob, &dev, expires_ms)
            .finalize()
            .into_bytes(),
    );
    format!(
        "/v1/blobs/{blob}?m={}&dev={}&exp={expires_ms}&sig={sig}",
        method.as_str(),
        dev.replace('+', "%2B")
    )
}

/// The query parameters of a presented URL (already percent-decoded).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Presented {
    pub m: Option<String>,
    pub dev: Option<String>,
    pub exp: Option<String>,
    pub sig: Option<String>,
}

/// Checks a presented capability for `blob`, used with `used`, at `now_ms`. The signature is
/// checked before the expiry and the method, so that only a genuine URL learns those reasons.
pub fn verify(
    secret: &[u8; 32],
    blob: &BlobId,
    used: Method,
    p: &Presented,
    now_ms: u64,
) -> Result<Capability, CapabilityError> {
    let m = p.m.as_deref().ok_or(CapabilityError::Missing("m"))?;
    let dev = p.dev.as_deref().ok_or(CapabilityError::Missing("dev"))?;
    let exp = p.exp.as_deref().ok_or(CapabilityError::Missing("exp"))?;
    let sig = p.sig.as_deref().ok_or(CapabilityError::Missing("sig"))?;
    let method = Method::parse(m).ok_or(CapabilityError::BadSignature)?;
    let exp: u64 = exp.parse().map_err(|_| CapabilityError::BadSignature)?;
    let sig = hex::decode(sig).map_err(|_| CapabilityError::BadSignature)?;
    mac(secret, method, blob, dev, exp)
        .verify_slice(&sig)
        .map_err(|_| CapabilityError::BadSignature)?;
    if exp <= now_ms {
        return Err(CapabilityError::Expired);
    }
    if method != used {
        return Err(CapabilityError::WrongMethod {
            allowed: method.as_str(),
            used: used.as_str(),
        });
    }
    let (account, no) = dev.rsplit_once('.').ok_or(CapabilityError::BadSignature)?;
    let account = AccountId::parse(account).map_err(|_| CapabilityError::BadSignature)?;
    let no: u32 = no.parse().map_err(|_| CapabilityError::BadSignature)?;
    Ok(Capability {
        method,
        blob: blob.clone(),
        device: DeviceId::new(account, no),
        expires_ms: exp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (BlobId, Presented) {
        let (path, query) = url.split_once('?').unwrap();
        let id = BlobId::parse(path.rsplit('/').next().unwrap()).unwrap();
        let q = query.replace("%2B", "+");
        let mut p = Presented::default();
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap();
            let v = Some(v.to_owned());
            match k {
                "m" => p.m = v,
                "dev" => p.dev = v,
                "exp" => p.exp = v,
                "sig" => p.sig = v,
                _ => {}
            }
        }
        (id, p)
    }

    fn dev() -> DeviceId {
        DeviceId::new(AccountId::parse("+14155550100").unwrap(), 2)
    }

    #[test]
    fn a_signed_url_verifies_for_its_method_until_it_expires() {
        let key = [7u8; 32];
        let blob = BlobId::of(b"content");
        let url = sign(&key, Method::Put, &blob, &dev(), 1000);
        let (id, p) = parse(&url);
        let cap = verify(&key, &id, Method::Put, &p, 999).unwrap();
        assert_eq!(cap.device, dev());
        assert_eq!(
            verify(&key, &id, Method::Put, &p, 1000),
            Err(CapabilityError::Expired)
        );
        assert!(matches!(
            verify(&key, &id, Method::Get, &p, 10),
            Err(CapabilityError::WrongMethod { .. })
        ));
    }

    #[test]
    fn another_key_blob_or_tampered_field_is_a_bad_signature() {
        let key = [7u8; 32];
        let blob = BlobId::of(b"content");
        let (id, p) = parse(&sign(&key, Method::Get, &blob, &dev(), 1000));
        assert_eq!(
            verify(&[8; 32], &id, Method::Get, &p, 1),
            Err(CapabilityError::BadSignature)
        );
        let other = BlobId::of(b"other");
        assert_eq!(
            verify(&key, &other, Method::Get, &p, 1),
            Err(CapabilityError::BadSignature)
        );
        let mut later = p.clone();
        later.exp = Some("999999".into());
        assert_eq!(
            verify(&key, &id, Method::Get, &later, 1),
            Err(CapabilityError::BadSignature)
        );
        let mut none = p;
        none.sig = None;
        assert_eq!(
            verify(&key, &id, Method::Get, &none, 1),
            Err(CapabilityError::Missing("sig"))
        );
    }
}
