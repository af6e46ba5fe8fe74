//! Compiles `proto/**/*.proto` in pure Rust (protox, no system `protoc`),
//! writes the encoded `FileDescriptorSet` to `OUT_DIR` and generates
//! prost messages plus tonic client/server code from it.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/tollgate/test/v1/test.proto",
    "proto/google/rpc/status.proto",
    "proto/tollgate/control/v1/control.proto",
    "proto/grpc/health/v1/health.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("file_descriptor_set.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out_dir)
        .compile_fds_with_config(fds, prost_config())?;
    Ok(())
}

/// Generates `prost::Name` impls so messages pack into `google.protobuf.Any`
/// with `type.googleapis.com/<full name>` type URLs.
fn prost_config() -> tonic_prost_build::Config {
    let mut config = tonic_prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    config
}
