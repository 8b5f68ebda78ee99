//! A service that reacts to subledger's history through NATS JetStream (README "Events"): it
//! subscribes to an offering, then reads every entry of that offering with a durable pull
//! consumer, each once and in sequence order, and acknowledges each after handling it.
//!
//! With a server publishing (`cargo run -- serve --nats-url nats://127.0.0.1:4222`):
//!
//! ```sh
//! cargo run --example events -- http://127.0.0.1:50051 nats://127.0.0.1:4222
//! ```
//!
//! CI runs this file's [`run`] against a real server and nats-server (tests/publish.rs), so it
//! cannot rot.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use subledger::publish::subject::entries_subject;
use subledger_client::{Ledger, proto};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let nats = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let ledger = Ledger::builder([target]).build()?;
    for entry in run(&ledger, &nats).await? {
        println!(
            "{} #{} {:?} {} {:+}",
            entry.offering_id,
            entry.sequence,
            entry.kind(),
            entry.investor_id,
            entry.units_delta
        );
    }
    Ok(())
}

/// Creates an offering, subscribes to it, and returns its entries as the consumer read them.
pub async fn run(
    ledger: &Ledger,
    nats_url: &str,
) -> Result<Vec<proto::HistoryEntry>, Box<dyn std::error::Error>> {
    let offering = ledger
        .create_offering(proto::CreateOfferingRequest {
            name: "Tower 9".into(),
            max_units: 100,
            ..Default::default()
        })
        .await?;
    let subscribed = ledger
        .subscribe(proto::SubscribeRequest {
            offering_id: offering.offering_id.clone(),
            investor_id: "alice".into(),
            units: 40,
            ..Default::default()
        })
        .await?;
    let last_sequence = subscribed.offering.map_or(0, |o| o.version);

    // A durable consumer keeps its place on the server: a service that restarts goes on from
    // the first entry it has not acknowledged. One consumer per offering here; a service that
    // follows every offering filters on `subledger.entries.>` instead.
    let client = async_nats::connect(nats_url).await?;
    let stream = jetstream::new(client).get_stream("SUBLEDGER").await?;
    let durable = format!("example-{}", uuid::Uuid::new_v4().simple());
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: entries_subject(&offering.offering_id),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let mut entries = Vec::new();
    // Publication follows the commit: the entries arrive within moments.
    while entries.len() < last_sequence as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await?
            .ok_or("the consumer ended")??;
        let entry = proto::HistoryEntry::decode(message.payload.clone())?;
        entries.push(entry);
        // Acknowledged once handled: an entry not acknowledged is delivered again.
        message.ack().await.map_err(|error| error.to_string())?;
    }
    stream.delete_consumer(&durable).await?;
    Ok(entries)
}
