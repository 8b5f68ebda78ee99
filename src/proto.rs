//! Code generated from proto/subledger/v1/subledger.proto by build.rs.

tonic::include_proto!("subledger.v1");

/// The encoded descriptors of subledger.proto and its imports, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/subledger_descriptor.bin"));

/// The fully qualified service name, as health checks name it.
pub const SERVICE_NAME: &str = "subledger.v1.SubscriptionLedger";
