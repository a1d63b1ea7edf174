//! Compiles the wire contract in `proto/` into Rust with tonic-prost-build.
//!
//! protox parses the `.proto` files in pure Rust, so a fresh machine needs no
//! system `protoc`. The encoded descriptor set is also written to `OUT_DIR`
//! for the agent's gRPC reflection service (what lets `grpcurl` discover it).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/execwatch/v1/execwatch.proto";
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("execwatch_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    // Client and server, tonic's defaults.
    tonic_prost_build::compile_fds(descriptors)?;
    Ok(())
}
