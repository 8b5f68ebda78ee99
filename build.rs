//! What the server alone needs at build time. The contract's Rust code is generated once, by
//! crates/subledger-proto (shared with the client); this script keeps the two jobs that belong to
//! the server:
//! - the encoded descriptor set that server reflection serves: subledger.proto and also
//!   google.rpc's error details (proto/google/rpc/error_details.proto), so that reflection
//!   clients such as grpcurl decode error statuses. Clients never need it, so it is not in the
//!   proto crate; it is a descriptor set, not generated code, so the contract is still turned
//!   into Rust in one place. protox compiles it, so a fresh machine needs no protoc.
//! - `sqlx::migrate!` embeds migrations/ at compile time but does not notice a new file there by
//!   itself: sqlx's documentation asks for this rerun-if-changed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ledger = "proto/subledger/v1/subledger.proto";
    let error_details = "proto/google/rpc/error_details.proto";
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let served = protox::compile([ledger, error_details], ["proto"])?;
    std::fs::write(
        out_dir.join("subledger_descriptor.bin"),
        prost::Message::encode_to_vec(&served),
    )?;
    Ok(())
}
