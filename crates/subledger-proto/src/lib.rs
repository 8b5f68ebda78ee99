//! subledger's gRPC contract as Rust: the messages and enums of
//! `proto/subledger/v1/subledger.proto` (package `subledger.v1`), the client stub
//! [`subscription_ledger_client`] and the server trait [`subscription_ledger_server`].
//!
//! Generated once, by this crate's build.rs, for the server and for its clients alike, so that
//! there is one `Offering` type, not one per crate. The proto is the reference for every field's
//! meaning, limits and errors.

tonic::include_proto!("subledger.v1");

/// The fully qualified service name, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "subledger.v1.SubscriptionLedger";

/// The domain of every ErrorInfo the server sends.
pub const ERROR_DOMAIN: &str = "subledger.v1";

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_name_is_the_generated_one() {
        assert_eq!(
            super::SERVICE_NAME,
            super::subscription_ledger_server::SERVICE_NAME
        );
    }
}
