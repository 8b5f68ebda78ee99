//! Compiles proto/ with protox (a pure-Rust protoc), so a fresh machine needs no protoc.
//! Rust code is generated for subledger.proto; the encoded descriptor set served by reflection
//! also describes google.rpc's error details, so reflection clients can decode error statuses.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ledger = "proto/subledger/v1/subledger.proto";
    let error_details = "proto/google/rpc/error_details.proto";
    println!("cargo:rerun-if-changed=proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let served = protox::compile([ledger, error_details], ["proto"])?;
    std::fs::write(
        out_dir.join("subledger_descriptor.bin"),
        prost::Message::encode_to_vec(&served),
    )?;
    tonic_prost_build::configure().compile_fds(protox::compile([ledger], ["proto"])?)?;
    Ok(())
}
