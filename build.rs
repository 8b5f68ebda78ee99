//! Compiles proto/ with protox (a pure-Rust protoc), so a fresh machine needs no protoc.
//! The encoded descriptor set is kept too: the server's reflection service serves it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/subledger/v1/subledger.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("subledger_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
