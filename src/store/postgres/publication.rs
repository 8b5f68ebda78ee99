//! The publisher's lease and cursors on PostgreSQL (see store::publication). Times are the
//! database's clock (now()), so that replicas with skewed clocks agree on when a lease expires.

use sqlx::Connection;

use super::PgStore;
use crate::ledger::Timestamp;
use crate::store::{Backlog, Lease, StartAt, StoreError};

/// Takes the lease if absent or expired (no row lock is waited on: ON CONFLICT locks the one
/// lease row for the statement's duration), bumping the epoch. A fresh row has epoch 1.
const TAKE_LEASE: &str = "INSERT INTO publication_lease (name, holder, epoch, expires_at) \
     VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
     epoch = publication_lease.epoch + 1, expires_at = excluded.expires_at \
     WHERE publication_lease.expires_at < now() RETURNING epoch";

/// Publication first enabled with --nats-publish-from now: existing offerings start at their
/// heads. Reads every head once, in the lease's first transaction only.
const CURSORS_AT_HEADS: &str = "INSERT INTO publication_cursor (offering_id, published_sequence) \
     SELECT offering_id, version FROM offering_head ON CONFLICT (offering_id) DO NOTHING";

const RENEW_LEASE: &str = "UPDATE publication_lease SET expires_at = now() + make_interval(secs => $3) \
     WHERE name = $1 AND epoch = $2";

const RELEASE_LEASE: &str =
    "UPDATE publication_lease SET expires_at = '-infinity' WHERE name = $1 AND epoch = $2";

/// Every head against its cursor: one pass over offering_head (a page of it), and one index
/// probe of history_entry per offering behind.
const BACKLOG: &str = "SELECT h.offering_id, h.version, COALESCE(c.published_sequence, 0), \
     (SELECT e.record_time FROM history_entry e WHERE e.offering_id = h.offering_id \
      AND e.sequence = COALESCE(c.published_sequence, 0) + 1) \
     FROM offering_head h LEFT JOIN publication_cursor c ON c.offering_id = h.offering_id \
     WHERE h.version > COALESCE(c.published_sequence, 0) AND ($1::text IS NULL OR h.offering_id > $1) \
     ORDER BY h.offering_id LIMIT $2";

/// The cursor moves forward only, and only under the epoch in force: FOR SHARE on the lease
/// row makes a takeover (which updates it) wait for this statement, or this one see it.
const ADVANCE_CURSOR: &str = "WITH lease AS (SELECT epoch FROM publication_lease \
     WHERE name = $1 AND epoch = $2 FOR SHARE) \
     INSERT INTO publication_cursor (offering_id, published_sequence) \
     SELECT $3, $4 FROM lease \
     ON CONFLICT (offering_id) DO UPDATE SET published_sequence = excluded.published_sequence \
     WHERE publication_cursor.published_sequence < excluded.published_sequence";

impl PgStore {
    pub(super) async fn take_lease(
        &self,
        lease: &Lease<'_>,
        start: StartAt,
    ) -> Result<Option<i64>, StoreError> {
        let mut connection = self.acquire().await?;
        let result = async {
            let mut tx = self.bounded(connection.begin()).await?;
            let epoch: Option<i64> = self
                .bounded(
                    sqlx::query_scalar(TAKE_LEASE)
                        .bind(lease.name)
                        .bind(lease.holder)
                        .bind(lease.ttl.as_secs_f64())
                        .fetch_optional(&mut *tx),
                )
                .await?;
            if epoch == Some(1) && start == StartAt::Heads {
                self.bounded(sqlx::query(CURSORS_AT_HEADS).execute(&mut *tx))
                    .await?;
            }
            self.commit(tx.commit()).await?;
            Ok(epoch)
        }
        .await;
        self.settle(connection, &result);
        result
    }

    pub(super) async fn renew_lease(
        &self,
        lease: &Lease<'_>,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let done = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query(RENEW_LEASE)
                        .bind(lease.name)
                        .bind(epoch)
                        .bind(lease.ttl.as_secs_f64())
                        .execute(connection),
                )
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn release_lease(&self, name: &str, epoch: i64) -> Result<(), StoreError> {
        self.read(|connection, _| {
            Box::pin(
                sqlx::query(RELEASE_LEASE)
                    .bind(name)
                    .bind(epoch)
                    .execute(connection),
            )
        })
        .await?;
        Ok(())
    }

    pub(super) async fn backlog(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Backlog>, StoreError> {
        let rows: Vec<(String, i64, i64, Option<Timestamp>)> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(BACKLOG)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(connection),
                )
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(offering_id, head_version, published_sequence, oldest_unpublished)| Backlog {
                    offering_id,
                    head_version,
                    published_sequence,
                    oldest_unpublished,
                },
            )
            .collect())
    }

    pub(super) async fn advance_cursor(
        &self,
        name: &str,
        epoch: i64,
        offering_id: &str,
        sequence: i64,
    ) -> Result<bool, StoreError> {
        let done = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query(ADVANCE_CURSOR)
                        .bind(name)
                        .bind(epoch)
                        .bind(offering_id)
                        .bind(sequence)
                        .execute(connection),
                )
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
