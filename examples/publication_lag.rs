//! Publication lag as a consumer sees it, for bench/publication.sh: follows every entry
//! published from now on (`subledger.entries.>`) for a while and prints, as one JSON line, how
//! long after its commit (the entry's record_time) each arrived: p50, p99, max, in milliseconds.
//! The server and this consumer must share a clock (one machine).
//!
//! ```sh
//! cargo run --release --example publication_lag -- nats://127.0.0.1:4222 SUBLEDGER 30
//! ```

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use subledger::proto;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let stream_name = args.next().unwrap_or_else(|| "SUBLEDGER".into());
    let seconds: u64 = args.next().map_or(Ok(30), |s| s.parse())?;
    let jetstream = jetstream::new(async_nats::connect(url).await?);
    // The server creates the stream once it holds the publication lease.
    let stream = loop {
        match jetstream.get_stream(&stream_name).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::None,
            filter_subject: "subledger.entries.>".into(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut lags_ms: Vec<f64> = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, messages.next()).await {
        let entry = proto::HistoryEntry::decode(message?.payload.clone())?;
        let Some(time) = entry.record_time else {
            continue;
        };
        let recorded = chrono::DateTime::from_timestamp(time.seconds, time.nanos as u32)
            .ok_or("record_time out of range")?;
        let lag = chrono::Utc::now() - recorded;
        lags_ms.push(lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    lags_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        lags_ms
            .get(((lags_ms.len() as f64 * q) as usize).min(lags_ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{{\"messages\": {}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": {:.1}}}",
        lags_ms.len(),
        at(0.50),
        at(0.99),
        lags_ms.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
