//! The gRPC contract: the generated types and stubs of crates/subledger-proto (one codegen,
//! shared with subledger-client), re-exported so the server and its tests name them
//! `subledger::proto`, plus what only the server serves.

pub use subledger_proto::*;

/// The encoded descriptors of subledger.proto and its imports, and of google.rpc's error
/// details, served by reflection (made by the top-level build.rs).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/subledger_descriptor.bin"));
