//! The one statement that writes a batch: it appends the entries, upserts the positions and
//! updates the heads of every offering the batch changed, each head with a NOTIFY. Its
//! parameters are one array per column, as UNNEST takes them: a batch of any size is one round
//! trip.

use sqlx::postgres::PgConnection;

use super::PgStore;
use super::changes::CHANGE_CHANNEL;
use crate::ledger::{self, BatchWrites, Entry, Offering, Position};
use crate::store::StoreError;
use crate::store::rows::{entry_columns, position_columns};

impl PgStore {
    /// Appends the entries, upserts the positions and updates the heads of every offering that
    /// changed, in one statement; each head update NOTIFYs watchers at commit. Entries whose
    /// request_id is already recorded are skipped; returns how many were appended.
    pub(super) async fn write(
        &self,
        connection: &mut PgConnection,
        writes: &[BatchWrites],
    ) -> Result<usize, StoreError> {
        let entries: Vec<&Entry> = writes.iter().flat_map(|w| &w.entries).collect();
        let positions: Vec<&Position> = writes.iter().flat_map(|w| &w.positions).collect();
        let heads: Vec<&Offering> = writes.iter().map(|w| &w.head).collect();
        fn terms(e: &Entry, before: bool) -> Option<&ledger::Terms> {
            if before {
                e.terms_before.as_ref()
            } else {
                e.terms_after.as_ref()
            }
        }
        let names = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.name.as_str()))
                .collect::<Vec<_>>()
        };
        let caps = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.max_units))
                .collect::<Vec<_>>()
        };
        let investor_caps = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.max_units_per_investor))
                .collect::<Vec<_>>()
        };
        let closes = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).and_then(|t| t.close_time))
                .collect::<Vec<_>>()
        };
        let appended = sqlx::query_scalar::<_, i64>(concat!(
            "WITH appended AS ( \
                INSERT INTO history_entry (",
            entry_columns!(),
            ") SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::smallint[], $4::text[], $5::bigint[], $6::bigint[], \
                    $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::timestamptz[], $12::text[], \
                    $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::bigint[], $18::bigint[], \
                    $19::timestamptz[], $20::text[], $21::bigint[], $22::bigint[], $23::timestamptz[], $24::bytea[]) \
                ON CONFLICT (offering_id, request_id) DO NOTHING RETURNING 1 \
             ), positions AS ( \
                INSERT INTO investor_position (",
            position_columns!(),
            ") SELECT * FROM UNNEST($25::text[], $26::text[], $27::bigint[], $28::timestamptz[], $29::bigint[], $30::bigint[]) \
                ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = EXCLUDED.units, \
                    update_time = EXCLUDED.update_time, demanded_units = EXCLUDED.demanded_units \
             ) \
             UPDATE offering_head AS h SET subscribed_units = v.subscribed_units, investor_count = v.investor_count, \
                status = v.status, version = v.version, update_time = v.update_time, demanded_units = v.demanded_units, \
                name = v.name, max_units = v.max_units, max_units_per_investor = v.max_units_per_investor, \
                close_time = v.close_time, last_hash = v.last_hash \
             FROM UNNEST($31::text[], $32::bigint[], $33::bigint[], $34::smallint[], $35::bigint[], $36::timestamptz[], \
                $37::bigint[], $38::text[], $39::bigint[], $40::bigint[], $41::timestamptz[], $42::bytea[]) \
                AS v (offering_id, subscribed_units, investor_count, status, version, update_time, demanded_units, \
                    name, max_units, max_units_per_investor, close_time, last_hash) \
             WHERE h.offering_id = v.offering_id \
             RETURNING (SELECT count(*) FROM appended), pg_notify($43, v.version::text || ':' || v.offering_id)"
        ))
        .bind(entries.iter().map(|e| e.offering_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.kind as i16).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.units_delta).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_units_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.offering_units_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.requested_units).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.expected_version).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.record_time).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.demand_delta).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_demand_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.offering_demand_after).collect::<Vec<_>>())
        .bind(names(true))
        .bind(caps(true))
        .bind(investor_caps(true))
        .bind(closes(true))
        .bind(names(false))
        .bind(caps(false))
        .bind(investor_caps(false))
        .bind(closes(false))
        .bind(entries.iter().map(|e| e.entry_hash.as_slice()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.offering_id.as_str()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.investor_id.as_str()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.units).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.update_time).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.demanded_units).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.first_sequence).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.offering_id.as_str()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.subscribed_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.investor_count).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.status as i16).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.version).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.update_time).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.demanded_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.name.as_str()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.max_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.max_units_per_investor).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.close_time).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.last_hash.as_slice()).collect::<Vec<_>>())
        .bind(CHANGE_CHANNEL)
        .fetch_all(connection);
        let appended = self.bounded(appended).await?;
        Ok(appended.first().copied().unwrap_or(0) as usize)
    }
}
