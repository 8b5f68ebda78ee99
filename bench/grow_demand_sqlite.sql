-- The SQLite twin of grow_demand.sql: a closed PRO_RATA offering with :investors investors'
-- demand already recorded (one SUBSCRIBED entry each, demand 1 to 100 units, oversubscribed
-- about five times), consistent with its head and positions so that verification passes.
-- usage: sqlite3 data/subledger.db -cmd ".parameter set :offering big" \
--          -cmd ".parameter set :investors 1000000" < bench/grow_demand_sqlite.sql
-- (on a file subledger has migrated; the offering must not exist yet), then
-- `subledger migrate --database-url sqlite://data/subledger.db` to hash it
.bail on
BEGIN IMMEDIATE;
-- The rows are written without entry_hash, as history recorded before the hash chain: the trigger
-- that refuses that is dropped for this transaction only and created again before COMMIT. The
-- head's last_hash stays NULL, so the next `subledger migrate` hashes this history.
DROP TRIGGER history_entry_hashed;
CREATE TEMP TABLE demand AS
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :investors)
SELECT i, 'investor-' || i AS investor_id, 1 + (i * 7919) % 100 AS units FROM g;
CREATE TEMP TABLE total AS SELECT sum(units) AS units FROM demand;
INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, investor_count,
                           status, version, create_time, update_time, allocation, demanded_units)
SELECT :offering, 'demand at scale', units / 5, 0, 0, 0, 2, :investors + 2,
       strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), 2, units
FROM total;
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           after_name, after_max_units, after_max_units_per_investor)
SELECT :offering, 1, 1, '', 0, 0, 0, 'grow-create', units / 5, 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
       'grower', 'demand at scale', units / 5, 0
FROM total;
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           demand_delta, investor_demand_after, offering_demand_after)
SELECT :offering, i + 1, 2, investor_id, 0, 0, 0, 'grow-' || i, units, 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
       'grower', units, units, sum(units) OVER (ORDER BY i)
FROM demand ORDER BY i;
INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after,
                           offering_units_after, request_id, requested_units, expected_version, record_time, actor,
                           offering_demand_after)
SELECT :offering, :investors + 2, 4, '', 0, 0, 0, 'grow-close', 0, 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
       'grower', units
FROM total;
INSERT INTO investor_position (offering_id, investor_id, units, update_time, demanded_units, first_sequence)
SELECT :offering, investor_id, 0, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), units, i + 1 FROM demand;
CREATE TRIGGER history_entry_hashed
    BEFORE INSERT ON history_entry
    WHEN NEW.entry_hash IS NULL
    BEGIN SELECT RAISE(ABORT, 'history_entry.entry_hash is required'); END;
COMMIT;
ANALYZE;
