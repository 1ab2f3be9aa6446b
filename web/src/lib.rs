//! relaybox-web: the browser companion's Rust half. The shared client core (`relaybox-core`:
//! Noise, Olm, the protobuf messages) compiled to WebAssembly, plus [`session`], the sans-IO
//! client the page drives. The page's JavaScript (`web/static/app.js`) owns the WebSocket,
//! IndexedDB, WebCrypto and the DOM; nothing cryptographic happens in JavaScript except
//! wrapping the stored state under a non-extractable WebCrypto AES-GCM key.
//!
//! # Crate map
//!
//! ```text
//! session/   the companion's state and protocol, sans I/O (host-tested)
//! lib.rs     the wasm-bindgen surface: `Companion`, JSON events, the pairing QR code
//! ```

pub mod session;

#[cfg(target_arch = "wasm32")]
mod bindings;

/// The pairing code as a QR code: an SVG document of black modules on white, with a quiet
/// zone, sized by `viewBox` (the page scales it).
pub fn qr_svg(text: &str) -> Result<String, session::WebError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| session::WebError(format!("cannot draw the QR code: {e}")))?;
    let width = code.width();
    let quiet = 4;
    let size = width + 2 * quiet;
    let mut path = String::new();
    for (i, c) in code.to_colors().iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % width + quiet, i / width + quiet);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}
