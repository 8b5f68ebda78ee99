-- The Merkle tree of each offering's history (RFC 9162 §2.1; src/ledger/merkle.rs), for
-- inclusion and consistency proofs. The same columns and table as PostgreSQL's 0007.
--
-- The head keeps the tree's frontier (the roots of its complete subtrees, highest first) so that
-- an append extends the tree with O(log n) hashes and no read; merkle_size is the tree's size,
-- which is the version once the tree is built. Both are NULL only for offerings recorded before
-- the tree: subledger's migrate() builds their tree right after this migration, in Rust (SQLite
-- has no SHA-256 in SQL).
ALTER TABLE offering_head ADD COLUMN merkle_size INTEGER
    CHECK (merkle_size IS NULL OR merkle_size = version);
ALTER TABLE offering_head ADD COLUMN merkle_frontier BLOB;

-- The roots of complete subtrees whose level is a multiple of 8 (256 leaves, 65,536, ...),
-- written with the append that completes them; `idx` is the subtree's place among those of its
-- level, from the left. Never updated, like the history.
CREATE TABLE merkle_node (
    offering_id TEXT    NOT NULL REFERENCES offering_head (offering_id),
    level       INTEGER NOT NULL CHECK (level > 0 AND level % 8 = 0),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    hash        BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (offering_id, level, idx)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER merkle_node_no_update
    BEFORE UPDATE ON merkle_node
    BEGIN SELECT RAISE(ABORT, 'merkle_node is append-only: UPDATE refused'); END;
CREATE TRIGGER merkle_node_no_delete
    BEFORE DELETE ON merkle_node
    BEGIN SELECT RAISE(ABORT, 'merkle_node is append-only: DELETE refused'); END;
