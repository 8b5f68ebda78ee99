//! What the publisher (src/publish) keeps in the database, beside the history it publishes: a
//! lease that says which replica publishes, and a cursor per offering that says how far its
//! history was published (migrations 0006_publication.sql).
//!
//! The lease has an epoch, bumped at every takeover, and a cursor moves only under the epoch
//! in force: a replica that lost its lease without knowing it (a long pause, a partition) can
//! no longer move a cursor. A row rather than an advisory lock, which a failover loses.

use std::time::Duration;

use crate::ledger::Timestamp;

/// The lease of the history's publisher. (A later publisher, of digests say, takes its own.)
pub const ENTRIES_LEASE: &str = "entries";

/// One replica's claim on a lease.
#[derive(Clone, Copy, Debug)]
pub struct Lease<'a> {
    /// Which lease ([`ENTRIES_LEASE`]).
    pub name: &'a str,
    /// This process, for the logs (a random id per start).
    pub holder: &'a str,
    /// How long the lease lasts unless renewed, by the database's clock.
    pub ttl: Duration,
}

/// Where the cursors of the offerings that exist start when a lease is taken for the first
/// time on a database (publication first enabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Every existing entry is published, oldest first.
    Beginning,
    /// Only entries appended from now on: the cursors start at the heads.
    Heads,
}

/// One offering with entries still to publish.
#[derive(Clone, Debug)]
pub struct Backlog {
    pub offering_id: String,
    /// The sequence of its latest entry.
    pub head_version: i64,
    /// The last sequence JetStream acknowledged (0: none).
    pub published_sequence: i64,
    /// When the first unpublished entry was recorded: what the lag is measured from.
    pub oldest_unpublished: Option<Timestamp>,
}

impl Backlog {
    /// Entries still to publish.
    pub fn entries(&self) -> i64 {
        self.head_version - self.published_sequence
    }
}
