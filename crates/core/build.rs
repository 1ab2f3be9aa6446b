//! Compiles `src/wire/proto/relaybox.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/wire/proto/relaybox.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["src/wire/proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
