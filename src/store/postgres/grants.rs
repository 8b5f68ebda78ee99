//! Least privilege: what the runtime role (the one `subledger serve` connects as) may do, kept as
//! ONE list, granted by `subledger migrate --grant-to ROLE` as the owner role.
//!
//! The owner (who ran the migrations) alone keeps UPDATE, DELETE, TRUNCATE, ALTER and trigger
//! rights on history_entry: a runtime role holding only SELECT and INSERT there cannot disable
//! the append-only trigger or rewrite history, even from a compromised replica. Work that needs
//! more, like migration 0004's backfill of the hash chain (which disables that trigger), is done
//! by `subledger migrate`, never by `serve --no-migrate`.
//!
//! A table that serving starts to use is one line in [`RUNTIME_GRANTS`]; the test that connects
//! as the runtime role (tests/roles.rs) then shows whether it is enough.

use super::PgStore;
use crate::store::StoreError;

/// One table the runtime role uses: its privileges there, and why it needs each.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub table: &'static str,
    /// As GRANT takes them, comma-separated.
    pub privileges: &'static str,
    pub why: &'static str,
}

/// Everything `serve` touches. No sequence (no serial or identity column) and no function call
/// needs a grant: pg_notify and the trigger's function are executable by PUBLIC, LISTEN needs
/// no privilege.
pub const RUNTIME_GRANTS: &[Grant] = &[
    Grant {
        table: "history_entry",
        privileges: "SELECT, INSERT",
        why: "appends entries and reads them; never UPDATE, DELETE or TRUNCATE: the history is append-only",
    },
    Grant {
        table: "offering_head",
        privileges: "SELECT, INSERT, UPDATE",
        why: "creates offerings, moves their heads, and locks them (SELECT ... FOR UPDATE needs UPDATE)",
    },
    Grant {
        table: "investor_position",
        privileges: "SELECT, INSERT, UPDATE",
        why: "creates and moves investors' positions",
    },
    Grant {
        table: "merkle_node",
        privileges: "SELECT, INSERT",
        why: "stores the Merkle tree's completed subtrees as appends complete them and reads them for proofs; never UPDATE or DELETE",
    },
    Grant {
        table: "publication_lease",
        privileges: "SELECT, INSERT, UPDATE",
        why: "takes, renews and gives up the lease that lets one replica publish to NATS (FOR SHARE needs UPDATE)",
    },
    Grant {
        table: "publication_cursor",
        privileges: "SELECT, INSERT, UPDATE",
        why: "records how far each offering is published to NATS",
    },
    Grant {
        table: "ledger",
        privileges: "SELECT",
        why: "reads the ledger id every digest carries, once at start-up",
    },
    Grant {
        table: "_sqlx_migrations",
        privileges: "SELECT",
        why: "serve --no-migrate checks that the applied migrations are the binary's own",
    },
];

/// What refuses a role as the runtime role, with why.
#[derive(sqlx::FromRow)]
struct RoleFacts {
    exists: bool,
    superuser: bool,
    owns_history: bool,
    is_current_user: bool,
}

impl PgStore {
    /// Makes `role`'s privileges on every table of [`RUNTIME_GRANTS`] exactly those listed (in
    /// one transaction: REVOKE ALL, then GRANT), with CONNECT on the database and USAGE on the
    /// schema. Run by the owner role after migrating. Refuses a role that does not exist, a
    /// superuser or the tables' owner, whom no grant restricts.
    pub async fn grant_runtime(&self, role: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let facts: RoleFacts = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS exists, \
                    COALESCE((SELECT rolsuper FROM pg_roles WHERE rolname = $1), false) AS superuser, \
                    COALESCE((SELECT pg_get_userbyid(relowner) = $1 FROM pg_class \
                              WHERE oid = to_regclass('history_entry')), false) AS owns_history, \
                    current_user = $1 AS is_current_user",
        )
        .bind(role)
        .fetch_one(&mut *tx)
        .await?;
        let refuse = |why: &str| Err(StoreError::Config(format!("--grant-to {role:?}: {why}")));
        if !facts.exists {
            return refuse("no such role (CREATE ROLE ... LOGIN first, see docs/operations.md)");
        }
        if facts.superuser {
            return refuse("a superuser, whom no grant restricts");
        }
        if facts.owns_history || facts.is_current_user {
            return refuse("the owner of the tables, whom no grant restricts");
        }
        let grantee = quote_ident(role);
        let (database, schema): (String, String) =
            sqlx::query_as("SELECT current_database(), current_schema()")
                .fetch_one(&mut *tx)
                .await?;
        let mut statements = vec![
            format!(
                "GRANT CONNECT ON DATABASE {} TO {grantee}",
                quote_ident(&database)
            ),
            format!(
                "GRANT USAGE ON SCHEMA {} TO {grantee}",
                quote_ident(&schema)
            ),
        ];
        for grant in RUNTIME_GRANTS {
            let table = quote_ident(grant.table);
            statements.push(format!("REVOKE ALL ON TABLE {table} FROM {grantee}"));
            statements.push(format!(
                "GRANT {} ON TABLE {table} TO {grantee}",
                grant.privileges
            ));
        }
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// An SQL identifier, quoted: a role's name comes from the command line.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_in_a_name_is_doubled() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"; DROP"), "\"a\"\"; DROP\"");
    }

    #[test]
    fn the_history_is_never_granted_more_than_select_and_insert() {
        let history = RUNTIME_GRANTS
            .iter()
            .find(|grant| grant.table == "history_entry")
            .expect("history_entry is granted");
        assert_eq!(history.privileges, "SELECT, INSERT");
    }
}
