//! Checks that the browser companion's bundle (`web/dist/`, built by `web/build.sh` and
//! committed) is present, and publishes its SHA-256 (of `web/dist/SHA256SUMS`) to the code as
//! `WEB_BUNDLE_SHA256`. The relay embeds the bundle: a relay without its web client is not
//! a build to ship by accident.

use sha2::{Digest, Sha256};

const FILES: [&str; 5] = [
    "index.html",
    "app.js",
    "style.css",
    "relaybox_web.js",
    "relaybox_web_bg.wasm",
];

fn main() {
    for f in FILES {
        let path = format!("web/dist/{f}.gz");
        println!("cargo:rerun-if-changed={path}");
        assert!(
            std::path::Path::new(&path).is_file(),
            "{path} is missing: build the web client with `bash web/build.sh`"
        );
    }
    let sums = "web/dist/SHA256SUMS";
    println!("cargo:rerun-if-changed={sums}");
    let list = std::fs::read(sums)
        .unwrap_or_else(|e| panic!("{sums}: {e}; build the web client with `bash web/build.sh`"));
    let hash: String = Sha256::digest(&list)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=WEB_BUNDLE_SHA256={hash}");
}
