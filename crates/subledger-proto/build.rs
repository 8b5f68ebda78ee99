//! Generates the Rust code of the contract, proto/subledger/v1/subledger.proto at the top of the
//! workspace, with protox (a pure-Rust protoc), so a fresh machine needs no protoc. This is the
//! only place the contract becomes Rust: the server and every client share its types.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The proto files stay at the workspace's top level, beside the server that serves them.
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let ledger = proto_dir.join("subledger/v1/subledger.proto");
    tonic_prost_build::configure().compile_fds(protox::compile([ledger], [&proto_dir])?)?;
    Ok(())
}
