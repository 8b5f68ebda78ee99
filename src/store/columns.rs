//! A table's stored columns, declared once ([`table!`]), and what derives from that one list:
//! the column list of every statement that reads or inserts whole rows, the row struct rows are
//! read into, the binds of one row or of one array per column (PostgreSQL's UNNEST), and the
//! placeholders and assignments of the statements that write rows.
//!
//! The lists themselves are in `rows.rs`. A column added there reaches every statement of both
//! backends and every bind; the migrations, the chain's encoding (`ledger::chain`) and the proto
//! are contracts, written by hand.

use std::fmt::Write as _;

/// What the writes do with a column after the row's insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Names the row: an upsert's conflict target, an update's WHERE.
    Key,
    /// Written again by every later write of the row.
    Updated,
    /// Written by the insert only.
    Inserted,
}

/// Which columns of a row a statement writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every column: an insert.
    All,
    /// The keys and the updated columns: an update of a row that exists.
    Rewritten,
}

impl Selection {
    pub const fn includes(self, role: Role) -> bool {
        match self {
            Self::All => true,
            Self::Rewritten => !matches!(role, Role::Inserted),
        }
    }
}

/// A query with its arguments, on either backend.
pub type Bound<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// One stored column, as its table's [`table!`] list declares it.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    /// PostgreSQL's name for its type: UNNEST's arrays are cast to it.
    pub sql_type: &'static str,
    pub role: Role,
}

/// The columns `selection` includes, in declared order (the order they are bound in).
fn selected(columns: &[Column], selection: Selection) -> impl Iterator<Item = &Column> {
    columns.iter().filter(move |c| selection.includes(c.role))
}

fn joined(parts: impl Iterator<Item = String>, separator: &str) -> String {
    parts.collect::<Vec<_>>().join(separator)
}

/// "offering_id, name, ...": the columns `selection` includes.
pub fn names(columns: &[Column], selection: Selection) -> String {
    joined(
        selected(columns, selection).map(|c| c.name.to_owned()),
        ", ",
    )
}

/// "INSERT INTO investor_position (offering_id, ...) VALUES ($1, ...)": one whole row.
pub fn insert_row(table: &str, columns: &[Column], params: &mut Params) -> String {
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names(columns, Selection::All),
        params.values(columns, Selection::All)
    )
}

/// "(offering_id, investor_id)": an upsert's conflict target.
pub fn keys(columns: &[Column]) -> String {
    let keys = columns.iter().filter(|c| c.role == Role::Key);
    format!("({})", joined(keys.map(|c| c.name.to_owned()), ", "))
}

/// "ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = EXCLUDED.units, ...": the
/// insert of a row that exists updates its updated columns instead.
pub fn on_conflict_update(columns: &[Column]) -> String {
    format!(
        "ON CONFLICT {} DO UPDATE SET {}",
        keys(columns),
        assign_updated(columns, "EXCLUDED")
    )
}

/// "units = EXCLUDED.units, ...": the updated columns, each from the same column of `source`.
pub fn assign_updated(columns: &[Column], source: &str) -> String {
    let updated = columns.iter().filter(|c| c.role == Role::Updated);
    joined(updated.map(|c| format!("{0} = {source}.{0}", c.name)), ", ")
}

/// "h.offering_id = v.offering_id": the keys of `target` matched to those of `source`.
pub fn match_keys(columns: &[Column], target: &str, source: &str) -> String {
    let keys = columns.iter().filter(|c| c.role == Role::Key);
    joined(
        keys.map(|c| format!("{target}.{0} = {source}.{0}", c.name)),
        " AND ",
    )
}

/// Numbers a statement's parameters in the order they are bound: `$1, $2` (PostgreSQL) or
/// `?1, ?2` (SQLite).
pub struct Params {
    sigil: char,
    next: usize,
}

impl Params {
    pub fn postgres() -> Self {
        Self {
            sigil: '$',
            next: 1,
        }
    }

    pub fn sqlite() -> Self {
        Self {
            sigil: '?',
            next: 1,
        }
    }

    /// The next parameter.
    pub fn next(&mut self) -> String {
        let param = format!("{}{}", self.sigil, self.next);
        self.next += 1;
        param
    }

    /// "$1, $2, ...": one parameter per column `selection` includes.
    pub fn values(&mut self, columns: &[Column], selection: Selection) -> String {
        joined(selected(columns, selection).map(|_| self.next()), ", ")
    }

    /// "$1::text[], $2::bigint[], ...": one array per column `selection` includes, as UNNEST
    /// takes them (PostgreSQL).
    pub fn arrays(&mut self, columns: &[Column], selection: Selection) -> String {
        let mut arrays = String::new();
        for column in selected(columns, selection) {
            if !arrays.is_empty() {
                arrays.push_str(", ");
            }
            let param = self.next();
            write!(arrays, "{param}::{}[]", column.sql_type).expect("a String takes writes");
        }
        arrays
    }

    /// "SET name = ?2, ... WHERE offering_id = ?1": an update of one row, its parameters
    /// numbered in the order [`Selection::Rewritten`] binds them.
    pub fn update(&mut self, columns: &[Column]) -> String {
        let numbered: Vec<(&Column, String)> = selected(columns, Selection::Rewritten)
            .map(|c| (c, self.next()))
            .collect();
        let assigned = |role| {
            numbered
                .iter()
                .filter(move |(c, _)| c.role == role)
                .map(|(c, param)| format!("{} = {param}", c.name))
        };
        format!(
            "SET {} WHERE {}",
            joined(assigned(Role::Updated), ", "),
            joined(assigned(Role::Key), " AND ")
        )
    }
}

/// "a, b, c" from the idents `a b c`, as a literal (`concat!` takes it).
macro_rules! comma_separated {
    ($first:ident $($rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}
pub(crate) use comma_separated;

/// A column's [`Role`] from its list's marker: none, `key` or `updated`.
macro_rules! role {
    () => {
        $crate::store::columns::Role::Inserted
    };
    (key) => {
        $crate::store::columns::Role::Key
    };
    (updated) => {
        $crate::store::columns::Role::Updated
    };
}
pub(crate) use role;

/// Declares a table's stored columns, once, in their order:
///
/// ```text
/// table! {
///     pub struct PositionRow from Position (position), listed by position_columns! {
///         offering_id: String [text, key] = position.offering_id.clone(),
///         units: i64 [bigint, updated] = position.units,
///         first_sequence: i64 [bigint] = position.first_sequence,
///     }
/// }
/// ```
///
/// Each column: its name, its type in the row, its PostgreSQL type, its [`Role`] (`key`,
/// `updated`, or none: written by the insert only), and how it is taken from the domain value
/// (bound as `position`). Derives from the list:
/// - `position_columns!()`: "offering_id, units, first_sequence", a literal for `concat!`;
/// - the row struct with one field per column (`sqlx::FromRow`: what SELECTs read);
/// - `PositionRow::COLUMNS`, for the statements that write (see [`Params`]);
/// - `From<&Position>`, and `bind` (one row's columns, in order) and `bind_arrays` (one
///   PostgreSQL array per column, in order, for UNNEST), each of the columns a [`Selection`]
///   includes.
///
/// The domain value from a row stays written out beside the list (`rows.rs`), since it decodes
/// codes, hashes and terms: its struct literal names every domain field, so the field a new
/// column needs is missed there only with a compile error, and the round-trip unit tests catch
/// a column that is not read back.
macro_rules! table {
    (
        $(#[$row_meta:meta])*
        $vis:vis struct $row:ident from $domain:ident ($value:ident), listed by $list:ident! {
            $(
                $(#[$column_meta:meta])*
                $column:ident: $ty:ty [$sql_type:ident $(, $role:ident)?] = $write:expr,
            )+
        }
    ) => {
        /// The columns in their declared order, as a literal: statements stay `&'static str`.
        /// (A table read only whole by tests, like merkle_node, leaves it unused.)
        #[allow(unused_macros)]
        macro_rules! $list {
            () => {
                $crate::store::columns::comma_separated!($($column)+)
            };
        }
        // For the other modules of the store (a test's table lists for its own module only).
        #[allow(unused_imports)]
        pub(crate) use $list;

        $(#[$row_meta])*
        #[derive(sqlx::FromRow)]
        $vis struct $row {
            $($(#[$column_meta])* $column: $ty,)+
        }

        impl $row {
            pub const COLUMNS: &'static [$crate::store::columns::Column] = &[$(
                $crate::store::columns::Column {
                    name: stringify!($column),
                    sql_type: stringify!($sql_type),
                    role: $crate::store::columns::role!($($role)?),
                },
            )+];

            /// Binds the columns `selection` includes, in declared order.
            pub fn bind<'q, DB>(
                self,
                query: $crate::store::columns::Bound<'q, DB>,
                selection: $crate::store::columns::Selection,
            ) -> $crate::store::columns::Bound<'q, DB>
            where
                DB: sqlx::Database,
                $($ty: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,)+
            {
                let mut query = query;
                $(
                    if selection.includes($crate::store::columns::role!($($role)?)) {
                        query = query.bind(self.$column);
                    }
                )+
                query
            }

            /// Binds one array per column `selection` includes, in declared order: `rows` as
            /// PostgreSQL's UNNEST takes them, in one statement whatever their number.
            pub fn bind_arrays<'q>(
                rows: Vec<Self>,
                query: $crate::store::columns::Bound<'q, sqlx::Postgres>,
                selection: $crate::store::columns::Selection,
            ) -> $crate::store::columns::Bound<'q, sqlx::Postgres> {
                $(let mut $column: Vec<$ty> = Vec::with_capacity(rows.len());)+
                for row in rows {
                    $($column.push(row.$column);)+
                }
                let mut query = query;
                $(
                    if selection.includes($crate::store::columns::role!($($role)?)) {
                        query = query.bind($column);
                    }
                )+
                query
            }
        }

        impl From<&$domain> for $row {
            fn from($value: &$domain) -> Self {
                Self {
                    $($column: $write,)+
                }
            }
        }
    };
}
pub(crate) use table;

#[cfg(test)]
mod tests {
    use sqlx::{Arguments, Execute, Postgres, Sqlite};

    use super::*;

    /// A table with a column of each role.
    struct Thing {
        id: String,
        count: i64,
        note: Option<String>,
    }

    table! {
        struct ThingRow from Thing (thing), listed by thing_columns! {
            id: String [text, key] = thing.id.clone(),
            count: i64 [bigint, updated] = thing.count,
            note: Option<String> [text] = thing.note.clone(),
        }
    }

    fn thing() -> Thing {
        Thing {
            id: "a".into(),
            count: 2,
            note: None,
        }
    }

    /// How many values a query carries.
    fn bound<'q, DB: sqlx::Database>(mut query: Bound<'q, DB>) -> usize
    where
        Bound<'q, DB>: Execute<'q, DB>,
    {
        query
            .take_arguments()
            .unwrap()
            .map_or(0, |arguments| arguments.len())
    }

    #[test]
    fn the_list_names_its_columns_in_order() {
        assert_eq!(thing_columns!(), "id, count, note");
        assert_eq!(names(ThingRow::COLUMNS, Selection::All), thing_columns!());
        assert_eq!(names(ThingRow::COLUMNS, Selection::Rewritten), "id, count");
    }

    #[test]
    fn statements_number_their_parameters_in_the_order_they_are_bound() {
        let columns = ThingRow::COLUMNS;
        assert_eq!(
            insert_row("thing", columns, &mut Params::sqlite()),
            "INSERT INTO thing (id, count, note) VALUES (?1, ?2, ?3)"
        );
        assert_eq!(
            Params::sqlite().update(columns),
            "SET count = ?2 WHERE id = ?1"
        );
        let mut params = Params::postgres();
        assert_eq!(
            params.arrays(columns, Selection::All),
            "$1::text[], $2::bigint[], $3::text[]"
        );
        assert_eq!(
            params.arrays(columns, Selection::Rewritten),
            "$4::text[], $5::bigint[]"
        );
        assert_eq!(params.next(), "$6");
    }

    #[test]
    fn an_upsert_and_an_update_assign_the_updated_columns_by_the_keys() {
        let columns = ThingRow::COLUMNS;
        assert_eq!(
            on_conflict_update(columns),
            "ON CONFLICT (id) DO UPDATE SET count = EXCLUDED.count"
        );
        assert_eq!(assign_updated(columns, "v"), "count = v.count");
        assert_eq!(match_keys(columns, "h", "v"), "h.id = v.id");
    }

    #[test]
    fn a_row_binds_the_columns_selected() {
        let query = || sqlx::query::<Sqlite>("");
        let all = ThingRow::from(&thing()).bind(query(), Selection::All);
        assert_eq!(bound(all), 3);
        let rewritten = ThingRow::from(&thing()).bind(query(), Selection::Rewritten);
        assert_eq!(bound(rewritten), 2);
        let rows = || vec![ThingRow::from(&thing()), ThingRow::from(&thing())];
        let query = || sqlx::query::<Postgres>("");
        assert_eq!(
            bound(ThingRow::bind_arrays(rows(), query(), Selection::All)),
            3
        );
        let rewritten = ThingRow::bind_arrays(rows(), query(), Selection::Rewritten);
        assert_eq!(bound(rewritten), 2);
    }
}
