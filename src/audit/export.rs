//! The export file (`subledger export`): one offering's snapshot as JSON lines, for an auditor
//! to verify without a database (docs/hash-chain.md, "Export files").
//!
//! Line 1 is `{"offering": {...}}` (the head), then one `{"entry": {...}}` per history entry in
//! sequence order, then one `{"position": {...}}` per position row. Field names are those of
//! the proto messages; enum values are the proto names without their prefix ("SUBSCRIBED");
//! times are RFC 3339 in UTC with microseconds; hashes are lower-case hex. Every stored field
//! is written, so the verifier recomputes exactly what VerifyOffering does.

use std::io::{self, Write};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::ledger::chain::{self, Hash};
use crate::ledger::merkle::Frontier;
use crate::ledger::{
    Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms, Timestamp,
};
use crate::store::SnapshotReader;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Offering(HeadLine),
    Entry(EntryLine),
    Position(PositionLine),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadLine {
    offering_id: String,
    name: String,
    max_units: i64,
    max_units_per_investor: i64,
    subscribed_units: i64,
    investor_count: i64,
    /// Absent from exports made before it was kept.
    #[serde(default)]
    position_count: i64,
    status: String,
    version: i64,
    create_time: String,
    update_time: String,
    allocation: String,
    open_time: Option<String>,
    close_time: Option<String>,
    lot_units: i64,
    min_units_per_investor: i64,
    max_total_demand: i64,
    demanded_units: i64,
    last_hash: String,
    /// The Merkle tree's size and frontier (hex, highest subtree first); absent from exports
    /// made before the tree was kept.
    #[serde(default)]
    merkle_size: i64,
    #[serde(default)]
    merkle_frontier: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    offering_id: String,
    sequence: i64,
    kind: String,
    investor_id: String,
    units_delta: i64,
    investor_units_after: i64,
    offering_units_after: i64,
    request_id: String,
    requested_units: i64,
    expected_version: i64,
    record_time: String,
    actor: String,
    demand_delta: i64,
    investor_demand_after: i64,
    offering_demand_after: i64,
    terms_before: Option<TermsLine>,
    terms_after: Option<TermsLine>,
    entry_hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsLine {
    name: String,
    max_units: i64,
    max_units_per_investor: i64,
    close_time: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionLine {
    investor_id: String,
    units: i64,
    demanded_units: i64,
    first_sequence: i64,
    update_time: Option<String>,
}

/// Writes a snapshot as export lines. A write error stops the writing and is kept for
/// [`ExportWriter::finish`]: the snapshot reader itself cannot fail.
pub struct ExportWriter<W> {
    out: W,
    lines: u64,
    error: Option<io::Error>,
}

impl<W: Write + Send> ExportWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            lines: 0,
            error: None,
        }
    }

    fn write(&mut self, line: &Line) {
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        match written {
            Ok(()) => self.lines += 1,
            Err(error) => self.error = Some(error),
        }
    }

    /// The lines written, once all are flushed.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.out.flush()?;
        Ok(self.lines)
    }
}

impl<W: Write + Send> SnapshotReader for ExportWriter<W> {
    fn head(&mut self, head: &Offering) {
        self.write(&Line::Offering(HeadLine {
            offering_id: head.offering_id.clone(),
            name: head.name.clone(),
            max_units: head.max_units,
            max_units_per_investor: head.max_units_per_investor,
            subscribed_units: head.subscribed_units,
            investor_count: head.investor_count,
            position_count: head.position_count,
            status: head.status.name().to_owned(),
            version: head.version,
            create_time: time_text(head.create_time),
            update_time: time_text(head.update_time),
            allocation: head.allocation.name().to_owned(),
            open_time: head.open_time.map(time_text),
            close_time: head.close_time.map(time_text),
            lot_units: head.lot_units,
            min_units_per_investor: head.min_units_per_investor,
            max_total_demand: head.max_total_demand,
            demanded_units: head.demanded_units,
            last_hash: chain::hex(&head.last_hash),
            merkle_size: head.tree.size() as i64,
            merkle_frontier: chain::hex(&head.tree.to_bytes()),
        }));
    }

    fn entry(&mut self, entry: &Entry) {
        let terms = |terms: &Option<Terms>| {
            terms.as_ref().map(|t| TermsLine {
                name: t.name.clone(),
                max_units: t.max_units,
                max_units_per_investor: t.max_units_per_investor,
                close_time: t.close_time.map(time_text),
            })
        };
        self.write(&Line::Entry(EntryLine {
            offering_id: entry.offering_id.clone(),
            sequence: entry.sequence,
            kind: entry.kind.name().to_owned(),
            investor_id: entry.investor_id.clone(),
            units_delta: entry.units_delta,
            investor_units_after: entry.investor_units_after,
            offering_units_after: entry.offering_units_after,
            request_id: entry.request_id.clone(),
            requested_units: entry.requested_units,
            expected_version: entry.expected_version,
            record_time: time_text(entry.record_time),
            actor: entry.actor.clone(),
            demand_delta: entry.demand_delta,
            investor_demand_after: entry.investor_demand_after,
            offering_demand_after: entry.offering_demand_after,
            terms_before: terms(&entry.terms_before),
            terms_after: terms(&entry.terms_after),
            entry_hash: chain::hex(&entry.entry_hash),
        }));
    }

    fn positions(&mut self, positions: Vec<Position>) {
        for position in positions {
            self.write(&Line::Position(PositionLine {
                investor_id: position.investor_id,
                units: position.units,
                demanded_units: position.demanded_units,
                first_sequence: position.first_sequence,
                update_time: position.update_time.map(time_text),
            }));
        }
    }
}

/// Feeds an export file to `reader` as the store would feed a snapshot, checking that its lines
/// come in the order the writer puts them: the head, entries, positions. Fails on the first
/// line that is not valid, naming it; a file that parses may still fail verification.
pub fn read(text: &str, reader: &mut impl SnapshotReader) -> anyhow::Result<()> {
    #[derive(PartialEq, PartialOrd)]
    enum Part {
        Head,
        Entries,
        Positions,
    }
    let mut part = None;
    let mut head_id = String::new();
    let mut positions = Vec::new();
    for (index, text) in text.lines().enumerate() {
        let number = index + 1;
        let line: Line = serde_json::from_str(text)
            .with_context(|| format!("line {number} is not an export line"))?;
        let this = match &line {
            Line::Offering(_) => Part::Head,
            Line::Entry(_) => Part::Entries,
            Line::Position(_) => Part::Positions,
        };
        match (&part, &this) {
            (None, Part::Head) => {}
            (None, _) => bail!("line {number}: an export starts with the offering line"),
            (Some(_), Part::Head) => bail!("line {number}: a second offering line"),
            (Some(before), now) if now < before => {
                bail!("line {number}: entries come before positions")
            }
            _ => {}
        }
        part = Some(this);
        let parsed = match line {
            Line::Offering(head) => head.parse().map(|head| {
                head_id = head.offering_id.clone();
                reader.head(&head);
            }),
            Line::Entry(entry) => entry.parse().and_then(|entry| {
                if entry.offering_id != head_id {
                    bail!("an entry of offering {:?}", entry.offering_id);
                }
                reader.entry(&entry);
                Ok(())
            }),
            Line::Position(position) => position
                .parse(&head_id)
                .map(|position| positions.push(position)),
        };
        parsed.with_context(|| format!("line {number}"))?;
    }
    if part.is_none() {
        bail!("the export is empty");
    }
    reader.positions(positions);
    Ok(())
}

/// The head's Merkle frontier as the export writes it.
fn parse_frontier(size: i64, hex: &str) -> anyhow::Result<Frontier> {
    let size = u64::try_from(size).map_err(|_| anyhow!("merkle_size {size} is negative"))?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| anyhow!("merkle_frontier is not hex"))?;
    Ok(Frontier::from_bytes(size, &bytes)?)
}

impl HeadLine {
    fn parse(self) -> anyhow::Result<Offering> {
        Ok(Offering {
            status: OfferingStatus::from_name(&self.status)
                .ok_or_else(|| anyhow!("status {:?} is not a status", self.status))?,
            allocation: Allocation::from_name(&self.allocation)
                .ok_or_else(|| anyhow!("allocation {:?} is not an allocation", self.allocation))?,
            create_time: parse_time("create_time", &self.create_time)?,
            update_time: parse_time("update_time", &self.update_time)?,
            open_time: parse_optional_time("open_time", self.open_time.as_deref())?,
            close_time: parse_optional_time("close_time", self.close_time.as_deref())?,
            last_hash: parse_hash("last_hash", &self.last_hash)?,
            tree: parse_frontier(self.merkle_size, &self.merkle_frontier)?,
            offering_id: self.offering_id,
            name: self.name,
            max_units: self.max_units,
            max_units_per_investor: self.max_units_per_investor,
            subscribed_units: self.subscribed_units,
            investor_count: self.investor_count,
            position_count: self.position_count,
            version: self.version,
            lot_units: self.lot_units,
            min_units_per_investor: self.min_units_per_investor,
            max_total_demand: self.max_total_demand,
            demanded_units: self.demanded_units,
        })
    }
}

impl EntryLine {
    fn parse(self) -> anyhow::Result<Entry> {
        let terms = |field: &str, terms: Option<TermsLine>| -> anyhow::Result<Option<Terms>> {
            terms
                .map(|t| {
                    Ok(Terms {
                        close_time: parse_optional_time(field, t.close_time.as_deref())?,
                        name: t.name,
                        max_units: t.max_units,
                        max_units_per_investor: t.max_units_per_investor,
                    })
                })
                .transpose()
        };
        Ok(Entry {
            kind: EntryKind::from_name(&self.kind).ok_or_else(|| {
                let shown: String = self.kind.chars().take(64).collect();
                anyhow!(
                    "sequence {}: kind {shown:?} is not an entry kind any release writes",
                    self.sequence
                )
            })?,
            record_time: parse_time("record_time", &self.record_time)?,
            terms_before: terms("terms_before.close_time", self.terms_before)?,
            terms_after: terms("terms_after.close_time", self.terms_after)?,
            entry_hash: parse_hash("entry_hash", &self.entry_hash)?,
            offering_id: self.offering_id,
            sequence: self.sequence,
            investor_id: self.investor_id,
            units_delta: self.units_delta,
            investor_units_after: self.investor_units_after,
            offering_units_after: self.offering_units_after,
            request_id: self.request_id,
            requested_units: self.requested_units,
            expected_version: self.expected_version,
            actor: self.actor,
            demand_delta: self.demand_delta,
            investor_demand_after: self.investor_demand_after,
            offering_demand_after: self.offering_demand_after,
        })
    }
}

impl PositionLine {
    fn parse(self, offering_id: &str) -> anyhow::Result<Position> {
        Ok(Position {
            offering_id: offering_id.to_owned(),
            update_time: parse_optional_time("update_time", self.update_time.as_deref())?,
            investor_id: self.investor_id,
            units: self.units,
            demanded_units: self.demanded_units,
            first_sequence: self.first_sequence,
        })
    }
}

/// RFC 3339 in UTC with microseconds, the precision stored.
pub fn time_text(time: Timestamp) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn parse_time(field: &str, text: &str) -> anyhow::Result<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.to_utc())
        .map_err(|error| anyhow!("{field} {text:?} is not an RFC 3339 time: {error}"))
}

fn parse_optional_time(field: &str, text: Option<&str>) -> anyhow::Result<Option<Timestamp>> {
    text.map(|text| parse_time(field, text)).transpose()
}

/// A hash in hex (`chain::hex`), naming the field when it is not one.
pub fn parse_hash(field: &str, text: &str) -> anyhow::Result<Hash> {
    chain::parse_hex(text).ok_or_else(|| anyhow!("{field} {text:?} is not 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ledger::testing::every_field;
    use crate::store::STORED_COLUMNS;

    /// The columns a line's fields stand for: a nested object's fields are columns of their own
    /// (`terms_before.name` is `before_name`).
    fn columns_of(line: &serde_json::Value) -> BTreeSet<String> {
        let mut columns = BTreeSet::new();
        for (field, value) in line.as_object().expect("an object") {
            match value.as_object() {
                Some(nested) => {
                    let prefix = field.trim_start_matches("terms_");
                    columns.extend(nested.keys().map(|inner| format!("{prefix}_{inner}")));
                }
                None => {
                    columns.insert(field.clone());
                }
            }
        }
        columns
    }

    /// An auditor recomputes from the export what VerifyOffering does from the database: every
    /// stored column must be in it (a column added to the lists in store/rows.rs fails this
    /// until the export carries it).
    #[test]
    fn an_export_carries_every_stored_column() {
        let mut out = Vec::new();
        let mut writer = ExportWriter::new(&mut out);
        writer.head(&every_field::offering());
        writer.entry(&every_field::entry());
        writer.positions(vec![every_field::position()]);
        assert_eq!(writer.finish().unwrap(), 3);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        for (table, stored) in STORED_COLUMNS {
            let (line, implied) = match table {
                "offering_head" => (&lines[0]["offering"], None),
                "history_entry" => (&lines[1]["entry"], None),
                // A position line's offering is the offering line's.
                "investor_position" => (&lines[2]["position"], Some("offering_id")),
                other => panic!("no export line for {other}"),
            };
            let mut exported = columns_of(line);
            exported.extend(implied.map(str::to_owned));
            let stored: BTreeSet<String> = stored.iter().map(|c| c.name.to_owned()).collect();
            assert_eq!(exported, stored, "{table}");
        }
    }
}
