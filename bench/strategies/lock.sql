-- (a) Pessimistic lock: the pg-anchor's multi.sql plus its cap check. The head row is locked
-- (SELECT ... FOR UPDATE) first and held to the commit; a request over the cap writes nothing.
\set o random(1, :offerings)
\set inv random(1, 100000)
\set n random(1, :units_max)
\set rid random(1, 9000000000000000000)
BEGIN;
SELECT (subscribed_units + :n <= max_units)::int AS fits, subscribed_units FROM anchor_head WHERE offering_id = :o FOR UPDATE \gset
SELECT count(*) AS seen FROM anchor_history WHERE offering_id = :o AND request_id = :rid::text \gset
\if :fits
INSERT INTO anchor_position (offering_id, investor_id, units) VALUES (:o, :inv, :n)
  ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = anchor_position.units + EXCLUDED.units, update_time = now()
  RETURNING units AS inv_units \gset
INSERT INTO anchor_history (offering_id, sequence, investor_id, units_delta, investor_units_after, offering_units_after, request_id)
  VALUES (:o, nextval('strategy_entry_sequence'), :inv, :n, :inv_units, :subscribed_units::bigint + :n, :rid::text);
UPDATE anchor_head SET subscribed_units = subscribed_units + :n, version = version + 1, update_time = now() WHERE offering_id = :o;
\endif
END;
