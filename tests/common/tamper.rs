//! Editing the stored history as someone with superuser rights would: past the append-only
//! triggers, with every total made to agree again, and the hashes recomputed if need be.

use super::{Backend, Client, TestDb};

/// Bob's 5 units become 4 in his entry (sequence 3), in carol's running total after it, in his
/// position and in the head: every total agrees. Before the hash chain, VerifyOffering said ok
/// to exactly this.
pub const UNITS_REWRITTEN: [&str; 4] = [
    "UPDATE history_entry SET units_delta = 4, investor_units_after = 4, offering_units_after = 14 \
     WHERE offering_id = 'deal' AND sequence = 3",
    "UPDATE history_entry SET offering_units_after = 17 WHERE offering_id = 'deal' AND sequence = 4",
    "UPDATE investor_position SET units = 4 WHERE offering_id = 'deal' AND investor_id = 'bob'",
    "UPDATE offering_head SET subscribed_units = 17 WHERE offering_id = 'deal'",
];

/// Runs `tampering` as a superuser would: past the append-only triggers. `bypass` picks how on
/// PostgreSQL (SQLite has one way: drop the triggers).
pub async fn tamper(db: &TestDb, bypass: PgBypass, tampering: &[&str]) {
    let (before, after): (Vec<&str>, Vec<&str>) = match (db.backend, bypass) {
        (Backend::Postgres, PgBypass::DisableTrigger) => (
            vec!["ALTER TABLE history_entry DISABLE TRIGGER history_entry_no_update_delete"],
            vec!["ALTER TABLE history_entry ENABLE TRIGGER history_entry_no_update_delete"],
        ),
        // Ordinary triggers do not fire for a session in replica mode.
        (Backend::Postgres, PgBypass::ReplicationRole) => {
            (vec!["SET session_replication_role = replica"], vec![])
        }
        (Backend::Sqlite, _) => (
            vec![
                "DROP TRIGGER IF EXISTS history_entry_no_update",
                "DROP TRIGGER IF EXISTS history_entry_no_delete",
            ],
            vec![],
        ),
    };
    let statements: Vec<&str> = before
        .into_iter()
        .chain(tampering.iter().copied())
        .chain(after)
        .collect();
    db.execute_sql_on_one_connection(&statements).await.unwrap();
}

#[derive(Clone, Copy)]
pub enum PgBypass {
    DisableTrigger,
    ReplicationRole,
}

/// Recomputes every stored hash of the offering from its (edited) history, and the head's
/// last hash and Merkle frontier, with the code any client can write from docs/hash-chain.md:
/// afterwards the stored chain agrees with itself, and only a digest taken before tells.
pub async fn rehash_from_the_history(db: &TestDb, client: &mut Client, offering_id: &str) {
    let mut previous = [0u8; 32];
    let mut rehash = Vec::new();
    let mut tree = subledger::ledger::merkle::Frontier::default();
    for entry in super::full_history(client, offering_id).await {
        previous = super::recompute_entry_hash(&previous, &entry);
        tree.append(&previous, &mut Vec::new());
        rehash.push(format!(
            "UPDATE history_entry SET entry_hash = {} WHERE offering_id = '{offering_id}' AND sequence = {}",
            bytes_literal(db.backend, &previous),
            entry.sequence
        ));
    }
    rehash.push(format!(
        "UPDATE offering_head SET last_hash = {}, merkle_frontier = {} WHERE offering_id = '{offering_id}'",
        bytes_literal(db.backend, &previous),
        bytes_literal(db.backend, &tree.to_bytes())
    ));
    let rehash: Vec<&str> = rehash.iter().map(String::as_str).collect();
    tamper(db, PgBypass::DisableTrigger, &rehash).await;
}

/// A BYTEA or BLOB literal.
fn bytes_literal(backend: Backend, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match backend {
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
        Backend::Sqlite => format!("X'{hex}'"),
    }
}
