//! The browser companion, embedded: the files of `web/dist/` (built by `web/build.sh` from
//! `web/static/` and the `relaybox-web` crate compiled to WebAssembly, committed so that a
//! machine with only Rust gets them) served by the public HTTP listener at `/`, and the
//! bundle's SHA-256 that the operator publishes.
//!
//! # Bundle hash
//!
//! `web/dist/SHA256SUMS` lists the SHA-256 of every uncompressed file, in `sha256sum` format
//! sorted by name; the bundle's SHA-256 is the SHA-256 of that list, so anyone can check it
//! with `curl --compressed` of each file, `sha256sum`, and `sha256sum` of the list. It is
//! printed by `relaybox --version`, returned by the admin API (`GET /v1/web`) and shown on the
//! page, and the README says how to compare it.
//!
//! Owns no session logic: the page talks to the relay over `GET /v1/ws` like any client.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// One embedded file, stored gzipped (`gzip -9 -n`, so the build is reproducible).
pub struct Asset {
    /// Served at `/{name}`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub gzipped: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            gzipped: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/web/dist/",
                $name,
                ".gz"
            )),
        }
    };
}

/// Every file of the bundle.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("relaybox_web.js", "text/javascript; charset=utf-8"),
    asset!("relaybox_web_bg.wasm", "application/wasm"),
];

/// The per-file SHA-256 list the bundle hash covers.
pub const SHA256SUMS: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/SHA256SUMS"));

/// The bundle's SHA-256 (lowercase hex), computed by the build script from [`SHA256SUMS`].
pub const BUNDLE_SHA256: &str = env!("WEB_BUNDLE_SHA256");

/// The page's Content-Security-Policy: its own origin only, no inline script or style, no
/// third party; `'wasm-unsafe-eval'` lets it compile its own WebAssembly, `blob:` images are
/// decrypted media.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Bytes the embedded bundle adds to the binary (gzipped).
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|a| a.gzipped.len()).sum()
}

/// The page's routes on the public listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { serve("index.html") }));
    for a in ASSETS {
        let name = a.name;
        cfg.route(
            &format!("/{name}"),
            web::get().to(move || async move { serve(name) }),
        );
    }
    cfg.route("/bundle.json", web::get().to(|| async { bundle_info() }));
}

/// GET /{name}: one file, gzipped (every browser accepts `Content-Encoding: gzip`).
fn serve(name: &str) -> HttpResponse {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return HttpResponse::NotFound().finish();
    };
    HttpResponse::Ok()
        .content_type(a.content_type)
        .insert_header((header::CONTENT_ENCODING, "gzip"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        // Revalidated on every load, so an upgraded relay serves its own page at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, format!("\"{BUNDLE_SHA256}\"")))
        .body(a.gzipped)
}

/// GET /bundle.json: the relay's version and the bundle's hash (the page shows them).
fn bundle_info() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "sha256": BUNDLE_SHA256,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_sums_list_is_embedded_and_nothing_else() {
        let listed: Vec<&str> = SHA256SUMS
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        let mut embedded: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        embedded.sort_unstable();
        assert_eq!(listed, embedded);
        assert_eq!(BUNDLE_SHA256.len(), 64);
    }
}
