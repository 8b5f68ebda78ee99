-- A closed PRO_RATA offering with :investors investors' demand already recorded (one SUBSCRIBED
-- entry each, demand 1 to 100 units, oversubscribed about five times), consistent with its head
-- and positions so that VerifyOffering passes: for timing AllocateOffering at scale.
-- usage: psql "$DATABASE_URL" -v offering=big -v investors=100000 -f bench/grow_demand.sql
-- (on a database subledger has migrated; the offering must not exist yet), then
-- `subledger migrate --database-url "$DATABASE_URL"` to hash it
\set ON_ERROR_STOP on
BEGIN;
-- The rows are written without entry_hash, as history recorded before the hash chain: its CHECK
-- is dropped for this transaction only and added back (NOT VALID: new rows only) before COMMIT.
-- The head's last_hash stays NULL, so the next `subledger migrate` (serve runs it too) hashes
-- this history, with the server's own code (docs/hash-chain.md). Until then subledger refuses
-- to append to the offering.
ALTER TABLE history_entry DROP CONSTRAINT history_entry_hashed;
CREATE TEMP TABLE demand AS
SELECT i, 'investor-' || i AS investor_id, 1 + (i::bigint * 7919) % 100 AS units,
       sum(1 + (i::bigint * 7919) % 100) OVER (ORDER BY i) AS running
FROM generate_series(1, :investors) AS i;
SELECT sum(units) AS total FROM demand \gset
INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, investor_count,
                           status, version, create_time, update_time, allocation, demanded_units)
VALUES (:'offering', 'demand at scale', :total / 5, 0, 0, 0, 2, :investors + 2, now(), now(), 2, :total);
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           after_name, after_max_units, after_max_units_per_investor)
VALUES (:'offering', 1, 1, '', 0, 0, 0, 'grow-create', :total / 5, 0, now(), 'grower',
        'demand at scale', :total / 5, 0);
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           demand_delta, investor_demand_after, offering_demand_after)
SELECT :'offering', i + 1, 2, investor_id, 0, 0, 0, 'grow-' || i, units, 0, now(), 'grower', units, units, running
FROM demand;
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           offering_demand_after)
VALUES (:'offering', :investors + 2, 4, '', 0, 0, 0, 'grow-close', 0, 0, now(), 'grower', :total);
INSERT INTO investor_position (offering_id, investor_id, units, update_time, demanded_units, first_sequence)
SELECT :'offering', investor_id, 0, now(), units, i + 1 FROM demand;
ALTER TABLE history_entry ADD CONSTRAINT history_entry_hashed CHECK (entry_hash IS NOT NULL) NOT VALID;
COMMIT;
ANALYZE history_entry;
ANALYZE investor_position;
