-- subledger on PostgreSQL: one head row per offering, one position row per (offering, investor),
-- and the append-only history that both are derived from.
--
-- Writers serialize per offering on the head row (SELECT ... FOR UPDATE); every position and
-- history change of an offering is made while holding that lock, so positions need no lock of
-- their own and history sequences are gapless (head.version + 1, + 2, ...).

CREATE TABLE offering_head (
    -- "C" collation: ListOfferings pages in byte order, the same order as its page tokens.
    offering_id            text        COLLATE "C" PRIMARY KEY,
    name                   text        NOT NULL,
    max_units              bigint      NOT NULL CHECK (max_units > 0),
    -- 0 = no per-investor cap.
    max_units_per_investor bigint      NOT NULL CHECK (max_units_per_investor >= 0 AND max_units_per_investor <= max_units),
    subscribed_units       bigint      NOT NULL DEFAULT 0,
    investor_count         bigint      NOT NULL DEFAULT 0 CHECK (investor_count >= 0),
    status                 smallint    NOT NULL CHECK (status IN (1, 2, 3)),
    -- The sequence of the latest history entry.
    version                bigint      NOT NULL CHECK (version >= 1),
    create_time            timestamptz NOT NULL,
    update_time            timestamptz NOT NULL,
    -- The last line of defence against overselling, whatever a code path does.
    CONSTRAINT offering_head_within_cap CHECK (subscribed_units >= 0 AND subscribed_units <= max_units)
);

CREATE TABLE investor_position (
    offering_id text        NOT NULL REFERENCES offering_head (offering_id),
    investor_id text        NOT NULL,
    units       bigint      NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (offering_id, investor_id),
    CONSTRAINT investor_position_not_negative CHECK (units >= 0)
);

CREATE TABLE history_entry (
    offering_id          text        NOT NULL REFERENCES offering_head (offering_id),
    sequence             bigint      NOT NULL CHECK (sequence >= 1),
    -- 1 created, 2 subscribed, 3 cancelled, 4 closed, 5 finalized (the proto's EntryKind).
    kind                 smallint    NOT NULL CHECK (kind BETWEEN 1 AND 5),
    investor_id          text        NOT NULL,
    units_delta          bigint      NOT NULL,
    investor_units_after bigint      NOT NULL CHECK (investor_units_after >= 0),
    offering_units_after bigint      NOT NULL CHECK (offering_units_after >= 0),
    request_id           text        NOT NULL,
    -- What the caller asked for, kept so that a retry can be told from a reuse of its request_id:
    -- units as requested (a Cancel of 0 = "all"), expected_version of Close/Finalize.
    requested_units      bigint      NOT NULL,
    expected_version     bigint      NOT NULL,
    record_time          timestamptz NOT NULL,
    PRIMARY KEY (offering_id, sequence),
    -- A request_id is applied at most once per offering.
    CONSTRAINT history_entry_request_once UNIQUE (offering_id, request_id)
);

CREATE INDEX history_entry_by_investor ON history_entry (offering_id, investor_id, sequence);

-- History is immutable: the database itself refuses to change or remove it.
CREATE FUNCTION history_entry_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'history_entry is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER history_entry_no_update_delete
    BEFORE UPDATE OR DELETE ON history_entry
    FOR EACH ROW EXECUTE FUNCTION history_entry_is_append_only();

CREATE TRIGGER history_entry_no_truncate
    BEFORE TRUNCATE ON history_entry
    FOR EACH STATEMENT EXECUTE FUNCTION history_entry_is_append_only();
