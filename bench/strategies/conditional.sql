-- (d) Conditional update: the head is changed only if the request fits
-- (UPDATE ... WHERE subscribed_units + n <= max_units), which takes the head's row lock until
-- the commit; the position and history are written only if a row was updated.
\set o random(1, :offerings)
\set inv random(1, 100000)
\set n random(1, :units_max)
\set rid random(1, 9000000000000000000)
BEGIN;
SELECT count(*) AS seen FROM anchor_history WHERE offering_id = :o AND request_id = :rid::text \gset
WITH head AS (
  UPDATE anchor_head SET subscribed_units = subscribed_units + :n, version = version + 1, update_time = now()
  WHERE offering_id = :o AND subscribed_units + :n <= max_units
  RETURNING subscribed_units
)
SELECT count(*) AS took, coalesce(max(subscribed_units), 0) AS units_after FROM head \gset
\if :took
INSERT INTO anchor_position (offering_id, investor_id, units) VALUES (:o, :inv, :n)
  ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = anchor_position.units + EXCLUDED.units, update_time = now()
  RETURNING units AS inv_units \gset
INSERT INTO anchor_history (offering_id, sequence, investor_id, units_delta, investor_units_after, offering_units_after, request_id)
  VALUES (:o, nextval('strategy_entry_sequence'), :inv, :n, :inv_units, :units_after, :rid::text);
\endif
END;
