//! CreateOffering's transaction: the head and the creation entry inserted by one statement, or,
//! when the offering exists, its creation compared with the request (a retry, or a conflict).

use std::sync::LazyLock;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::ledger::{CreateOutcome, Entry, NewOffering, Offering, Rejection, check_create};
use crate::store::columns::{Params, Selection, insert_row, keys, names};
use crate::store::rows::{EntryRow, HeadRow, entry_columns, head_columns};
use crate::store::{Change, StoreError};

/// The head's row, and the creation entry's only if the head was inserted: its parameters are
/// the head's columns, then the entry's (rows.rs).
static CREATE: LazyLock<String> = LazyLock::new(|| {
    let mut params = Params::postgres();
    let head = insert_row("offering_head", HeadRow::COLUMNS, &mut params);
    format!(
        "WITH head AS ( {head} ON CONFLICT {} DO NOTHING RETURNING 1 ) \
         INSERT INTO history_entry ({}) SELECT {} FROM head",
        keys(HeadRow::COLUMNS),
        names(EntryRow::COLUMNS, Selection::All),
        params.values(EntryRow::COLUMNS, Selection::All),
    )
});

impl PgStore {
    /// One attempt at `create_offering`, on `connection`.
    pub(super) async fn create_on(
        &self,
        connection: &mut PgConnection,
        new: &NewOffering,
        (head, entry): (&Offering, &Entry),
    ) -> Result<Result<CreateOutcome, Rejection>, StoreError> {
        let mut tx = self.bounded(connection.begin()).await?;
        // ON CONFLICT DO NOTHING waits for a concurrent creator of the same id to finish, so the
        // loser then sees the winner's committed rows.
        let inserted = sqlx::query(CREATE.as_str());
        let inserted = HeadRow::from(head).bind(inserted, Selection::All);
        let inserted = EntryRow::from(entry).bind(inserted, Selection::All);
        let inserted = self
            .bounded(inserted.execute(&mut *tx))
            .await?
            .rows_affected();
        if inserted == 1 {
            self.commit(tx.commit()).await?;
            let _ = self.changes.send(Change::Committed {
                offering_id: head.offering_id.as_str().into(),
                version: 1,
            });
            return Ok(Ok(CreateOutcome::Created(head.clone())));
        }
        let existing = self.lock_head(&mut tx, &new.offering_id).await?;
        let created_by: Option<EntryRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    entry_columns!(),
                    " FROM history_entry WHERE offering_id = $1 AND sequence = 1"
                ))
                .bind(&new.offering_id)
                .fetch_optional(&mut *tx),
            )
            .await?;
        self.bounded(tx.rollback()).await?;
        match (existing, created_by) {
            (Some(existing), Some(created_by)) => {
                Ok(check_create(new, existing, &created_by.try_into()?))
            }
            _ => Err(StoreError::Corrupt(format!(
                "offering {:?} has a head but no creation entry",
                new.offering_id
            ))),
        }
    }

    /// Lock order: the head row first, always (the only row lock any transaction takes
    /// explicitly; position rows are only written while it is held).
    async fn lock_head(
        &self,
        connection: &mut PgConnection,
        offering_id: &str,
    ) -> Result<Option<Offering>, StoreError> {
        let row: Option<HeadRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    head_columns!(),
                    " FROM offering_head WHERE offering_id = $1 FOR UPDATE"
                ))
                .bind(offering_id)
                .fetch_optional(connection),
            )
            .await?;
        row.map(Offering::try_from).transpose()
    }
}
