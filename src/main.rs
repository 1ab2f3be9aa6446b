//! The `relaybox` binary: everything lives in the library; see `cli.rs`.

fn main() {
    std::process::exit(relaybox::cli::run());
}
