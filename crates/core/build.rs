//! Compiles `src/wire/proto/relaybox.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/wire/proto/relaybox.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["src/wire/proto"])?;
    prost_build::Config::new()
        // A message's ciphertext is carried as a shared buffer from the frame it arrived in
        // to the frames it leaves in: decoding a `Bytes` frame slices it, and pushing a
        // queued entry to a device clones a reference, not the bytes.
        .bytes([
            ".relaybox.v1.Envelope.ciphertext",
            ".relaybox.v1.Deliver.ciphertext",
        ])
        .compile_fds(fds)?;
    Ok(())
}
