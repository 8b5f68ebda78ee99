-- Offerings as issuers run them: an allocation mode (first come, or pro rata to demand after the
-- close), a subscription window, lots and a per-investor minimum, a bound on total demand, and
-- amendments of the terms while open.
--
-- Every new column has a constant default, so no existing row is rewritten and offerings created
-- before read as they behaved: first come, no window, any number of units, no minimum, no demand.

ALTER TABLE offering_head
    -- 1 first come, 2 pro rata (the proto's Allocation).
    ADD COLUMN allocation             smallint    NOT NULL DEFAULT 1 CHECK (allocation IN (1, 2)),
    ADD COLUMN open_time              timestamptz,
    ADD COLUMN close_time             timestamptz,
    -- 0 or 1 = any number of units.
    ADD COLUMN lot_units              bigint      NOT NULL DEFAULT 0 CHECK (lot_units >= 0),
    ADD COLUMN min_units_per_investor bigint      NOT NULL DEFAULT 0 CHECK (min_units_per_investor >= 0),
    -- 0 = no bound but the server's (10^18).
    ADD COLUMN max_total_demand       bigint      NOT NULL DEFAULT 0 CHECK (max_total_demand >= 0),
    -- Pro rata: the total demand, which may exceed max_units; first come: 0.
    ADD COLUMN demanded_units         bigint      NOT NULL DEFAULT 0 CHECK (demanded_units >= 0),
    ADD CONSTRAINT offering_head_window CHECK (open_time IS NULL OR close_time IS NULL OR open_time < close_time);
-- Status 4: allocated (pro rata, between closed and finalized).
ALTER TABLE offering_head DROP CONSTRAINT offering_head_status_check;
ALTER TABLE offering_head ADD CONSTRAINT offering_head_status_check CHECK (status IN (1, 2, 3, 4));

ALTER TABLE investor_position
    -- Pro rata: the investor's demand (units stay 0 until the allocation); first come: 0.
    ADD COLUMN demanded_units bigint NOT NULL DEFAULT 0 CHECK (demanded_units >= 0),
    -- The sequence of the investor's first subscription: a pro-rata tie goes to the earlier.
    -- 0 for positions recorded before it was kept (all first come, where it plays no part).
    ADD COLUMN first_sequence bigint NOT NULL DEFAULT 0 CHECK (first_sequence >= 0);

ALTER TABLE history_entry
    -- Pro rata demand recorded by the entry (first come entries change units instead).
    ADD COLUMN demand_delta                  bigint NOT NULL DEFAULT 0,
    ADD COLUMN investor_demand_after         bigint NOT NULL DEFAULT 0 CHECK (investor_demand_after >= 0),
    ADD COLUMN offering_demand_after         bigint NOT NULL DEFAULT 0 CHECK (offering_demand_after >= 0),
    -- The amendable terms: after (creation and amendment entries) and before (amendments).
    ADD COLUMN before_name                   text,
    ADD COLUMN before_max_units              bigint,
    ADD COLUMN before_max_units_per_investor bigint,
    ADD COLUMN before_close_time             timestamptz,
    ADD COLUMN after_name                    text,
    ADD COLUMN after_max_units               bigint,
    ADD COLUMN after_max_units_per_investor  bigint,
    ADD COLUMN after_close_time              timestamptz;
-- Kinds 6 (allocated) and 7 (offering amended).
ALTER TABLE history_entry DROP CONSTRAINT history_entry_kind_check;
ALTER TABLE history_entry ADD CONSTRAINT history_entry_kind_check CHECK (kind BETWEEN 1 AND 7);
