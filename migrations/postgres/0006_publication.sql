-- Publication of the history to NATS JetStream (src/publish): which replica publishes, and how
-- far each offering's history has been published.
--
-- One lease row per publisher ('entries' for the history). Whoever holds an unexpired lease
-- publishes; taking it over bumps the epoch, and every cursor write names the epoch it was
-- made under, so a replica that lost the lease without knowing it can no longer move a cursor.
-- A row, not an advisory lock: an advisory lock vanishes on a failover to a standby, and two
-- replicas would then publish at once.
CREATE TABLE publication_lease (
    name       text        PRIMARY KEY,
    -- The process holding it (a random id per start), for the logs.
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL CHECK (epoch >= 1),
    expires_at timestamptz NOT NULL
);

-- Per offering, the last sequence JetStream acknowledged (stored): entries after it are still to
-- be published, in sequence order. No row means none was published yet (0).
CREATE TABLE publication_cursor (
    offering_id        text   COLLATE "C" PRIMARY KEY REFERENCES offering_head (offering_id),
    published_sequence bigint NOT NULL CHECK (published_sequence >= 0)
);
