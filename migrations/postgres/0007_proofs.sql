-- The Merkle tree of each offering's history (RFC 9162 §2.1; src/ledger/merkle.rs), for
-- inclusion and consistency proofs.
--
-- The head keeps the tree's frontier (the roots of its complete subtrees, highest first) so that
-- an append extends the tree with O(log n) hashes and no read. merkle_size is the tree's size,
-- which is the version once the tree is built: the CHECK refuses a head update by a release
-- that does not extend the tree (during a rolling upgrade it answers the caller with an error
-- to retry on an upgraded replica), so the frontier can never fall behind the history.
--
-- Both columns are nullable only for offerings recorded before the tree: subledger's migrate()
-- builds their tree right after this migration (one transaction per offering, under its head
-- lock), so that no NULL remains once a server serves.
ALTER TABLE offering_head
    ADD COLUMN merkle_size bigint,
    ADD COLUMN merkle_frontier bytea,
    ADD CONSTRAINT offering_head_merkle_size_is_version
        CHECK (merkle_size IS NULL OR (merkle_size = version AND merkle_frontier IS NOT NULL));

-- The roots of complete subtrees whose level is a multiple of 8 (256 leaves, 65,536, ...),
-- written with the append that completes them: any other subtree is hashed from fewer than 256
-- rows below it (leaves are SHA-256(0x00 || history_entry.entry_hash)), so a proof reads a few
-- thousand rows at most, while this table grows by one row per 256 entries. `idx` is the
-- subtree's place among those of its level, from the left. Never updated, like the history.
CREATE TABLE merkle_node (
    offering_id text NOT NULL REFERENCES offering_head (offering_id),
    level smallint NOT NULL CHECK (level > 0 AND level % 8 = 0),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (offering_id, level, idx)
);

CREATE FUNCTION merkle_node_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'merkle_node is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER merkle_node_no_update_delete
    BEFORE UPDATE OR DELETE ON merkle_node
    FOR EACH ROW EXECUTE FUNCTION merkle_node_is_append_only();
