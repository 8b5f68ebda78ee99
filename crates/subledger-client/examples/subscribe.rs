//! A service's view of subledger through subledger-client: create an offering, subscribe, meet
//! the cap as a typed error with its numbers, take what remains, then close the offering guarded
//! by the version read.
//!
//! With a server running (`cargo run -- serve` at the top of the workspace):
//!
//! ```sh
//! cargo run -p subledger-client --example subscribe -- http://127.0.0.1:50051
//! ```
//!
//! CI runs this file's [`run`] against a real server (tests/client.rs), so it cannot rot.

use subledger_client::{Error, Ledger, proto};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    // One endpoint here; give every replica's address and calls go round-robin over them, a
    // retry going to the next one.
    let ledger = Ledger::builder([target]).build()?;
    let outcome = run(&ledger).await?;
    println!(
        "offering {}: alice holds {}, bob was refused with {} units remaining and then took them; closed at version {}",
        outcome.offering_id,
        outcome.alice_units,
        outcome.remaining_when_refused,
        outcome.closed_version
    );
    Ok(())
}

/// What the example did, for the reader and for the test that runs it.
pub struct Outcome {
    pub offering_id: String,
    pub alice_units: i64,
    pub remaining_when_refused: i64,
    pub closed_version: i64,
}

pub async fn run(ledger: &Ledger) -> Result<Outcome, Box<dyn std::error::Error>> {
    // No offering_id and no request_id: the client makes both before the first attempt, so a
    // retry after a lost answer replays the create instead of making a second offering.
    let offering = ledger
        .create_offering(proto::CreateOfferingRequest {
            name: "Tower 9".into(),
            max_units: 100,
            max_units_per_investor: 60,
            ..Default::default()
        })
        .await?;
    let offering_id = offering.offering_id;

    let subscribe = |investor_id: &str, units: i64| proto::SubscribeRequest {
        offering_id: offering_id.clone(),
        investor_id: investor_id.into(),
        units,
        ..Default::default() // request_id: made by the client, kept across retries
    };
    let alice = ledger.subscribe(subscribe("alice", 50)).await?;
    let alice_units = alice.position.map_or(0, |position| position.units);

    // 60 more do not fit: the refusal says how many remain, as a number, not in a message.
    let remaining_when_refused = match ledger.subscribe(subscribe("bob", 60)).await {
        Err(Error::OfferingCapExceeded { remaining, .. }) => remaining,
        Err(other) => return Err(other.into()),
        Ok(_) => return Err("60 units fitted in the 50 that remain".into()),
    };
    ledger
        .subscribe(subscribe("bob", remaining_when_refused))
        .await?;

    // Close only the offering as last read: a stale version is refused, with the actual one.
    let stale = ledger.get_offering(&offering_id).await?.version - 1;
    let close = |expected_version| proto::CloseOfferingRequest {
        offering_id: offering_id.clone(),
        expected_version,
        ..Default::default()
    };
    let actual = match ledger.close_offering(close(stale)).await {
        Err(Error::VersionMismatch { actual, .. }) => actual,
        Err(other) => return Err(other.into()),
        Ok(_) => return Err("a stale expected_version was accepted".into()),
    };
    let closed = ledger.close_offering(close(actual)).await?;
    Ok(Outcome {
        offering_id,
        alice_units,
        remaining_when_refused,
        closed_version: closed.version,
    })
}
