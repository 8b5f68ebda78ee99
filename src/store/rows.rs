//! The stored columns of each table, declared once (`table!`, see `columns.rs`), and the checked
//! conversion of their rows into ledger types. Both backends' schemas have the same column
//! names and types.

use crate::ledger::{
    Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms, Timestamp,
};

use super::StoreError;
use super::columns::table;
use crate::ledger::merkle::{Frontier, Node};

table! {
    /// offering_head: one row per offering, locked by every writer of the offering.
    pub struct HeadRow from Offering (head), listed by head_columns! {
        offering_id: String [text, key] = head.offering_id.clone(),
        name: String [text, updated] = head.name.clone(),
        max_units: i64 [bigint, updated] = head.max_units,
        max_units_per_investor: i64 [bigint, updated] = head.max_units_per_investor,
        subscribed_units: i64 [bigint, updated] = head.subscribed_units,
        investor_count: i64 [bigint, updated] = head.investor_count,
        position_count: i64 [bigint, updated] = head.position_count,
        status: i16 [smallint, updated] = head.status as i16,
        version: i64 [bigint, updated] = head.version,
        create_time: Timestamp [timestamptz] = head.create_time,
        update_time: Timestamp [timestamptz, updated] = head.update_time,
        allocation: i16 [smallint] = head.allocation as i16,
        open_time: Option<Timestamp> [timestamptz] = head.open_time,
        close_time: Option<Timestamp> [timestamptz, updated] = head.close_time,
        lot_units: i64 [bigint] = head.lot_units,
        min_units_per_investor: i64 [bigint] = head.min_units_per_investor,
        max_total_demand: i64 [bigint] = head.max_total_demand,
        demanded_units: i64 [bigint, updated] = head.demanded_units,
        /// NULL only for an offering recorded before the chain and not yet backfilled.
        last_hash: Option<Vec<u8>> [bytea, updated] = Some(head.last_hash.to_vec()),
        /// The Merkle tree's size (the version, once built) and frontier; NULL only for an
        /// offering recorded before the tree and not yet built (migrate() builds it).
        merkle_size: Option<i64> [bigint, updated] = Some(head.tree.size() as i64),
        merkle_frontier: Option<Vec<u8>> [bytea, updated] = Some(head.tree.to_bytes()),
    }
}

table! {
    /// investor_position: one row per investor who ever held units in an offering.
    pub struct PositionRow from Position (position), listed by position_columns! {
        offering_id: String [text, key] = position.offering_id.clone(),
        investor_id: String [text, key] = position.investor_id.clone(),
        units: i64 [bigint, updated] = position.units,
        /// NOT NULL in the schema; None in the domain for an investor never written.
        update_time: Option<Timestamp> [timestamptz, updated] = position.update_time,
        demanded_units: i64 [bigint, updated] = position.demanded_units,
        /// Set by the investor's first subscription and kept.
        first_sequence: i64 [bigint] = position.first_sequence,
    }
}

table! {
    /// history_entry: one row per entry, never updated (its triggers refuse it).
    pub struct EntryRow from Entry (entry), listed by entry_columns! {
        offering_id: String [text] = entry.offering_id.clone(),
        sequence: i64 [bigint] = entry.sequence,
        kind: i16 [smallint] = entry.kind as i16,
        investor_id: String [text] = entry.investor_id.clone(),
        units_delta: i64 [bigint] = entry.units_delta,
        investor_units_after: i64 [bigint] = entry.investor_units_after,
        offering_units_after: i64 [bigint] = entry.offering_units_after,
        request_id: String [text] = entry.request_id.clone(),
        requested_units: i64 [bigint] = entry.requested_units,
        expected_version: i64 [bigint] = entry.expected_version,
        record_time: Timestamp [timestamptz] = entry.record_time,
        actor: String [text] = entry.actor.clone(),
        demand_delta: i64 [bigint] = entry.demand_delta,
        investor_demand_after: i64 [bigint] = entry.investor_demand_after,
        offering_demand_after: i64 [bigint] = entry.offering_demand_after,
        before_name: Option<String> [text] = entry.terms_before.as_ref().map(|t| t.name.clone()),
        before_max_units: Option<i64> [bigint] = entry.terms_before.as_ref().map(|t| t.max_units),
        before_max_units_per_investor: Option<i64> [bigint] =
            entry.terms_before.as_ref().map(|t| t.max_units_per_investor),
        before_close_time: Option<Timestamp> [timestamptz] =
            entry.terms_before.as_ref().and_then(|t| t.close_time),
        after_name: Option<String> [text] = entry.terms_after.as_ref().map(|t| t.name.clone()),
        after_max_units: Option<i64> [bigint] = entry.terms_after.as_ref().map(|t| t.max_units),
        after_max_units_per_investor: Option<i64> [bigint] =
            entry.terms_after.as_ref().map(|t| t.max_units_per_investor),
        after_close_time: Option<Timestamp> [timestamptz] =
            entry.terms_after.as_ref().and_then(|t| t.close_time),
        /// NULL only for an entry recorded before the chain and not yet backfilled.
        entry_hash: Option<Vec<u8>> [bytea] = Some(entry.entry_hash.to_vec()),
    }
}

/// A stored node of an offering's Merkle tree, as a batch's write takes it.
pub struct OfferingNode {
    pub offering_id: String,
    pub node: Node,
}

table! {
    /// merkle_node: the root of a complete subtree of a stored level, never updated.
    pub struct NodeRow from OfferingNode (stored), listed by node_columns! {
        offering_id: String [text, key] = stored.offering_id.clone(),
        level: i16 [smallint, key] = i16::from(stored.node.level),
        idx: i64 [bigint, key] = stored.node.index as i64,
        hash: Vec<u8> [bytea] = stored.node.hash.to_vec(),
    }
}

impl NodeRow {
    /// The stored nodes of every offering `writes` changed.
    pub fn of_writes(writes: &[crate::ledger::BatchWrites]) -> Vec<Self> {
        writes
            .iter()
            .flat_map(|w| {
                w.nodes.iter().map(|node| {
                    Self::from(&OfferingNode {
                        offering_id: w.head.offering_id.clone(),
                        node: node.clone(),
                    })
                })
            })
            .collect()
    }
}

/// Every table's columns, for the checks that what else lists them (the export) lists them all.
/// merkle_node is not among them: its rows are derived from the entries' hashes alone.
#[cfg(test)]
pub(crate) const STORED_COLUMNS: [(&str, &[super::columns::Column]); 3] = [
    ("offering_head", HeadRow::COLUMNS),
    ("investor_position", PositionRow::COLUMNS),
    ("history_entry", EntryRow::COLUMNS),
];

impl HeadRow {
    /// Appending to an offering whose history is not hashed would link to nothing: writers
    /// refuse it (migrate() hashes every offering before a server serves; only rows loaded
    /// straight into the database since then can lack it, until the next migrate).
    pub fn require_chained(&self) -> Result<(), StoreError> {
        match (&self.last_hash, self.merkle_size) {
            (Some(_), Some(_)) => Ok(()),
            (None, _) => Err(StoreError::Corrupt(format!(
                "offering {:?} has no last_hash: its history is not hashed yet (run subledger migrate)",
                self.offering_id
            ))),
            (_, None) => Err(StoreError::Corrupt(format!(
                "offering {:?} has no Merkle tree yet (run subledger migrate)",
                self.offering_id
            ))),
        }
    }
}

impl TryFrom<HeadRow> for Offering {
    type Error = StoreError;

    fn try_from(row: HeadRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, value: i16| {
            StoreError::Corrupt(format!("offering {:?} has {what} {value}", row.offering_id))
        };
        let status = OfferingStatus::from_code(row.status.into())
            .ok_or_else(|| corrupt("status", row.status))?;
        let allocation = Allocation::from_code(row.allocation.into())
            .ok_or_else(|| corrupt("allocation", row.allocation))?;
        // NULL reads as zeros: the offering still shows in reads (e.g. rows loaded straight into
        // the database since migrate() ran); a writer refuses it first (`require_chained`).
        let last_hash = hash(row.last_hash, || {
            format!("offering {:?} last_hash", row.offering_id)
        })?
        .unwrap_or_default();
        // NULL reads as the empty tree, as last_hash reads as zeros.
        let tree = match (row.merkle_size, &row.merkle_frontier) {
            (Some(size), Some(bytes)) => u64::try_from(size)
                .ok()
                .and_then(|size| Frontier::from_bytes(size, bytes).ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "offering {:?} has a Merkle frontier of {} bytes for size {size}",
                        row.offering_id,
                        bytes.len()
                    ))
                })?,
            _ => Frontier::default(),
        };
        Ok(Offering {
            offering_id: row.offering_id,
            name: row.name,
            max_units: row.max_units,
            max_units_per_investor: row.max_units_per_investor,
            subscribed_units: row.subscribed_units,
            investor_count: row.investor_count,
            position_count: row.position_count,
            status,
            version: row.version,
            create_time: row.create_time,
            update_time: row.update_time,
            allocation,
            open_time: row.open_time,
            close_time: row.close_time,
            lot_units: row.lot_units,
            min_units_per_investor: row.min_units_per_investor,
            max_total_demand: row.max_total_demand,
            demanded_units: row.demanded_units,
            last_hash,
            tree,
        })
    }
}

impl From<PositionRow> for Position {
    fn from(row: PositionRow) -> Self {
        Position {
            offering_id: row.offering_id,
            investor_id: row.investor_id,
            units: row.units,
            update_time: row.update_time,
            demanded_units: row.demanded_units,
            first_sequence: row.first_sequence,
        }
    }
}

/// A stored hash: NULL stays None, 32 bytes are a hash, any other length is corrupt.
/// `what` names the value in that error (a closure: no string is made for every row read).
fn hash(
    value: Option<Vec<u8>>,
    what: impl FnOnce() -> String,
) -> Result<Option<[u8; 32]>, StoreError> {
    value
        .map(|bytes| {
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                StoreError::Corrupt(format!("{} is {} bytes, not 32", what(), bytes.len()))
            })
        })
        .transpose()
}

/// The amendable terms of a row's columns; None when the row records none.
fn terms(
    name: Option<String>,
    max_units: Option<i64>,
    max_units_per_investor: Option<i64>,
    close_time: Option<Timestamp>,
) -> Option<Terms> {
    Some(Terms {
        name: name?,
        max_units: max_units?,
        max_units_per_investor: max_units_per_investor?,
        close_time,
    })
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;

    /// After migrate() every entry is hashed: a NULL hash is a broken store.
    fn try_from(row: EntryRow) -> Result<Self, StoreError> {
        let (entry, hashed) = row.into_entry()?;
        if !hashed {
            return Err(StoreError::Corrupt(format!(
                "entry {:?}#{} has no entry_hash: recorded before the hash chain and not backfilled",
                entry.offering_id, entry.sequence
            )));
        }
        Ok(entry)
    }
}

impl EntryRow {
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// The entry, and whether its hash was stored (when not, entry_hash holds zeros): the
    /// backfill reads entries recorded before the chain this way.
    pub fn into_entry(self) -> Result<(Entry, bool), StoreError> {
        let row = self;
        let kind = EntryKind::from_code(row.kind.into()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "entry {:?}#{} has kind {}",
                row.offering_id, row.sequence, row.kind
            ))
        })?;
        let after = terms(
            row.after_name,
            row.after_max_units,
            row.after_max_units_per_investor,
            row.after_close_time,
        );
        let before = terms(
            row.before_name,
            row.before_max_units,
            row.before_max_units_per_investor,
            row.before_close_time,
        );
        let entry_hash = hash(row.entry_hash, || {
            format!("entry {:?}#{} entry_hash", row.offering_id, row.sequence)
        })?;
        let entry = Entry {
            offering_id: row.offering_id,
            sequence: row.sequence,
            kind,
            investor_id: row.investor_id,
            units_delta: row.units_delta,
            investor_units_after: row.investor_units_after,
            offering_units_after: row.offering_units_after,
            request_id: row.request_id,
            requested_units: row.requested_units,
            expected_version: row.expected_version,
            record_time: row.record_time,
            actor: row.actor,
            demand_delta: row.demand_delta,
            investor_demand_after: row.investor_demand_after,
            offering_demand_after: row.offering_demand_after,
            terms_before: before,
            terms_after: after,
            entry_hash: entry_hash.unwrap_or_default(),
        };
        Ok((entry, entry_hash.is_some()))
    }
}

pub fn into_entries(rows: Vec<EntryRow>) -> Result<Vec<Entry>, StoreError> {
    rows.into_iter().map(Entry::try_from).collect()
}

pub fn into_offerings(rows: Vec<HeadRow>) -> Result<Vec<Offering>, StoreError> {
    rows.into_iter().map(Offering::try_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::every_field;
    use crate::store::columns::{Selection, names};

    fn corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
        match result {
            Err(StoreError::Corrupt(what)) => what,
            other => panic!("not refused as corrupt: {other:?}"),
        }
    }

    #[test]
    fn an_offering_reads_back_as_it_was_written() {
        let offering = every_field::offering();
        let row = HeadRow::from(&offering);
        row.require_chained().unwrap();
        assert_eq!(Offering::try_from(row).unwrap(), offering);
    }

    #[test]
    fn an_entry_reads_back_as_it_was_written_with_or_without_terms() {
        let amended = every_field::entry();
        assert_eq!(Entry::try_from(EntryRow::from(&amended)).unwrap(), amended);
        let created = Entry {
            terms_before: None,
            ..every_field::entry()
        };
        assert_eq!(Entry::try_from(EntryRow::from(&created)).unwrap(), created);
        let subscribed = Entry {
            terms_after: None,
            ..created
        };
        assert_eq!(
            Entry::try_from(EntryRow::from(&subscribed)).unwrap(),
            subscribed
        );
    }

    #[test]
    fn a_position_reads_back_as_it_was_written() {
        let position = every_field::position();
        assert_eq!(Position::from(PositionRow::from(&position)), position);
    }

    #[test]
    fn terms_read_as_none_unless_their_name_and_caps_are_all_there() {
        let mut row = EntryRow::from(&every_field::entry());
        row.before_max_units = None;
        row.after_name = None;
        let entry = Entry::try_from(row).unwrap();
        assert_eq!((entry.terms_before, entry.terms_after), (None, None));
    }

    #[test]
    fn codes_no_migration_writes_are_refused_as_corrupt() {
        for status in [0, 5, -1] {
            let row = HeadRow {
                status,
                ..HeadRow::from(&every_field::offering())
            };
            let what = corrupt(Offering::try_from(row));
            assert_eq!(what, format!("offering \"tower-7\" has status {status}"));
        }
        for allocation in [0, 3] {
            let row = HeadRow {
                allocation,
                ..HeadRow::from(&every_field::offering())
            };
            let what = corrupt(Offering::try_from(row));
            assert_eq!(
                what,
                format!("offering \"tower-7\" has allocation {allocation}")
            );
        }
        for kind in [0, 8] {
            let row = EntryRow {
                kind,
                ..EntryRow::from(&every_field::entry())
            };
            let what = corrupt(Entry::try_from(row));
            assert_eq!(what, format!("entry \"tower-7\"#9 has kind {kind}"));
        }
    }

    #[test]
    fn hashes_of_any_length_but_32_bytes_are_refused_as_corrupt() {
        for length in [0, 31, 33] {
            let head = HeadRow {
                last_hash: Some(vec![7; length]),
                ..HeadRow::from(&every_field::offering())
            };
            let what = corrupt(Offering::try_from(head));
            assert!(
                what.contains(&format!("last_hash is {length} bytes")),
                "{what}"
            );
            let entry = EntryRow {
                entry_hash: Some(vec![9; length]),
                ..EntryRow::from(&every_field::entry())
            };
            let what = corrupt(Entry::try_from(entry));
            assert!(
                what.contains(&format!("entry_hash is {length} bytes")),
                "{what}"
            );
        }
    }

    /// Recorded before the hash chain and not yet backfilled: only the backfill reads such an
    /// entry, and no writer appends to such an offering; reads show the head with zeros.
    #[test]
    fn what_the_chain_has_not_reached_is_read_only_where_it_may_be() {
        let entry = EntryRow {
            entry_hash: None,
            ..EntryRow::from(&every_field::entry())
        };
        let (unhashed, hashed) = entry.into_entry().unwrap();
        assert!(!hashed);
        assert_eq!(unhashed.entry_hash, [0; 32]);
        let entry = EntryRow {
            entry_hash: None,
            ..EntryRow::from(&every_field::entry())
        };
        assert!(corrupt(Entry::try_from(entry)).contains("has no entry_hash"));

        let head = HeadRow {
            last_hash: None,
            ..HeadRow::from(&every_field::offering())
        };
        assert!(corrupt(head.require_chained()).contains("has no last_hash"));
        assert_eq!(Offering::try_from(head).unwrap().last_hash, [0; 32]);
    }

    /// The literal lists that SELECTs use and the lists that writes are made from are one.
    #[test]
    fn the_column_literals_are_the_declared_columns() {
        assert_eq!(head_columns!(), names(HeadRow::COLUMNS, Selection::All));
        assert_eq!(
            position_columns!(),
            names(PositionRow::COLUMNS, Selection::All)
        );
        assert_eq!(entry_columns!(), names(EntryRow::COLUMNS, Selection::All));
        assert_eq!(node_columns!(), names(NodeRow::COLUMNS, Selection::All));
    }

    /// A head's write rewrites its running totals, status, terms and last hash, never what
    /// CreateOffering alone sets; a position's keeps its first sequence.
    #[test]
    fn a_write_rewrites_the_keys_and_updated_columns_only() {
        assert_eq!(
            names(HeadRow::COLUMNS, Selection::Rewritten),
            "offering_id, name, max_units, max_units_per_investor, subscribed_units, \
             investor_count, position_count, status, version, update_time, close_time, \
             demanded_units, last_hash, merkle_size, merkle_frontier"
        );
        assert_eq!(
            names(PositionRow::COLUMNS, Selection::Rewritten),
            "offering_id, investor_id, units, update_time, demanded_units"
        );
    }
}
