//! The SQL of the store, written once for both databases. Statements use `$N` parameters,
//! which both PostgreSQL and SQLite accept; the few differences live in [`Dialect`].

use std::borrow::Cow;

use sqlx::any::AnyRow;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Row};

use crate::error::{Result, StorageError};
use crate::types::{Event, EventKind, KeyValue, Revision};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Starts a write transaction holding the database's writer lock from its first statement
    /// (SQLite upgrades deferred transactions lazily and can then fail with SQLITE_BUSY).
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
        }
    }

    /// Starts a read-only transaction whose statements all see one snapshot.
    pub(crate) fn begin_read(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }

    /// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
    pub(crate) fn values_list(self, rows: usize, cols: usize) -> String {
        let mut out = String::with_capacity(rows * (cols * 5 + 4));
        for r in 0..rows {
            if r > 0 {
                out.push_str(", ");
            }
            out.push('(');
            self.push_params(&mut out, r * cols + 1, cols);
            out.push(')');
        }
        out
    }

    /// `$1, $2, ...` for an `IN` list.
    pub(crate) fn in_list(self, n: usize) -> String {
        let mut out = String::with_capacity(n * 5);
        self.push_params(&mut out, 1, n);
        out
    }

    /// `n` parameters from `first` on, for statements whose parameters each appear once and
    /// in order. SQLite gets anonymous `?`: sqlx looks numbered ones up by name, a linear
    /// scan per parameter that makes a 2,000-parameter insert quadratic. Written into one
    /// string (this is on every write's path).
    fn push_params(self, out: &mut String, first: usize, n: usize) {
        use std::fmt::Write;
        for i in first..first + n {
            if i > first {
                out.push_str(", ");
            }
            match self {
                Dialect::Sqlite => out.push('?'),
                Dialect::Postgres => {
                    let _ = write!(out, "${i}");
                }
            }
        }
    }

    pub(crate) fn migrator(self) -> Migrator {
        let (desc, sql) = match self {
            Dialect::Sqlite => ("kv", include_str!("../../sql/sqlite/0001_kv.sql")),
            Dialect::Postgres => ("kv", include_str!("../../sql/postgres/0001_kv.sql")),
        };
        let mut m = Migrator::with_migrations(vec![Migration::new(
            1,
            Cow::Borrowed(desc),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(sql)),
            false,
        )]);
        m.dangerous_set_table_name("kelp_schema_migrations");
        m
    }
}

pub(crate) const HEAD_AND_COMPACT: &str =
    "SELECT m.rev, k.rev FROM kv_meta m JOIN kv_compaction k ON k.id = 1 WHERE m.id = 1";
pub(crate) const HEAD: &str = "SELECT rev FROM kv_meta WHERE id = 1";

pub(crate) const KV_COLUMNS: &str = "key, create_rev, mod_rev, version, lease, value";

/// A single key at the head, with the head and compact revisions, in one statement.
pub(crate) const GET_AT_HEAD: &str = "SELECT m.rev, k.rev, c.key, c.create_rev, c.mod_rev, c.version, c.lease, c.value \
     FROM kv_meta m JOIN kv_compaction k ON k.id = 1 LEFT JOIN kv_current c ON c.key = $1 WHERE m.id = 1";

pub(crate) const RANGE_AT_HEAD: &str = "SELECT key, create_rev, mod_rev, version, lease, value FROM kv_current \
     WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3";
pub(crate) const COUNT_AT_HEAD: &str =
    "SELECT COUNT(*) FROM kv_current WHERE key >= $1 AND key < $2";

/// The latest row of each key in the range at or below a revision, tombstones excluded.
pub(crate) const RANGE_AT_REV: &str = "SELECT l.key, l.create_rev, l.rev, l.version, l.lease, l.value FROM kv_log l \
     JOIN (SELECT MAX(rev) AS r FROM kv_log WHERE key >= $1 AND key < $2 AND rev <= $3 GROUP BY key) m ON l.rev = m.r \
     WHERE l.deleted = 0 ORDER BY l.key LIMIT $4";
pub(crate) const COUNT_AT_REV: &str = "SELECT COUNT(*) FROM kv_log l \
     JOIN (SELECT MAX(rev) AS r FROM kv_log WHERE key >= $1 AND key < $2 AND rev <= $3 GROUP BY key) m ON l.rev = m.r \
     WHERE l.deleted = 0";

const EVENT_COLUMNS: &str = "SELECT l.rev, l.key, l.create_rev, l.version, l.lease, l.deleted, l.value, \
     p.create_rev, p.rev, p.version, p.lease, p.value FROM kv_log l LEFT JOIN kv_log p ON p.rev = l.prev_rev";

/// Log rows above a revision, oldest first, as events: what the follower publishes.
pub(crate) fn events_after() -> String {
    format!("{EVENT_COLUMNS} WHERE l.rev > $1 ORDER BY l.rev LIMIT $2")
}

/// Log rows of a key range within `[from, to]`, oldest first: what a watch replays.
pub(crate) fn events_in_range() -> String {
    format!(
        "{EVENT_COLUMNS} WHERE l.rev >= $1 AND l.rev <= $2 AND l.key >= $3 AND l.key < $4 ORDER BY l.rev LIMIT $5"
    )
}

pub(crate) fn decode_kv(row: &AnyRow, at: usize) -> Result<KeyValue> {
    Ok(KeyValue {
        key: row.try_get(at)?,
        create_revision: row.try_get(at + 1)?,
        mod_revision: row.try_get(at + 2)?,
        version: row.try_get(at + 3)?,
        lease: row.try_get(at + 4)?,
        value: row.try_get(at + 5)?,
    })
}

/// Decodes a row of [`events_after`] / [`events_in_range`].
pub(crate) fn decode_event(row: &AnyRow) -> Result<Event> {
    let rev: Revision = row.try_get(0)?;
    let key: Vec<u8> = row.try_get(1)?;
    let deleted: i64 = row.try_get(5)?;
    let prev_rev: Option<Revision> = row.try_get(8)?;
    let prev_kv = match prev_rev {
        Some(prev_rev) => Some(KeyValue {
            key: key.clone(),
            create_revision: row.try_get::<Option<i64>, _>(7)?.unwrap_or_default(),
            mod_revision: prev_rev,
            version: row.try_get::<Option<i64>, _>(9)?.unwrap_or_default(),
            lease: row.try_get::<Option<i64>, _>(10)?.unwrap_or_default(),
            value: row.try_get::<Option<Vec<u8>>, _>(11)?.unwrap_or_default(),
        }),
        None => None,
    };
    let kv = KeyValue {
        key,
        create_revision: row.try_get(2)?,
        mod_revision: rev,
        version: row.try_get(3)?,
        lease: row.try_get(4)?,
        value: row.try_get(6)?,
    };
    let kind = if deleted != 0 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Ok(Event { kind, kv, prev_kv })
}

/// Splits rows into statements of power-of-two sizes (a 63-row batch takes six statements),
/// so that multi-row statements come in a handful of shapes the prepared-statement cache keeps.
pub(crate) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = 1usize << rows.len().ilog2().min(8);
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// The items of an `IN` list padded to a power of two by repeating the last one, so that
/// any number of keys takes one statement of one of a few shapes.
pub(crate) fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let n = items.len().next_power_of_two();
    items
        .iter()
        .chain(std::iter::repeat_n(items.last(), n - items.len()).flatten())
}

pub(crate) fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt(what.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_in_few_shapes() {
        for n in 0..600 {
            let rows: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = chunks(&rows).collect();
            assert_eq!(parts.concat(), rows);
            assert!(
                parts
                    .iter()
                    .all(|p| p.len().is_power_of_two() && p.len() <= 256)
            );
            assert!(parts.len() <= 9 + n / 256);
        }
    }

    #[test]
    fn in_lists_pad_to_a_power_of_two_with_the_last_item() {
        assert_eq!(
            padded(&[1, 2, 3]).copied().collect::<Vec<_>>(),
            [1, 2, 3, 3]
        );
        assert_eq!(padded(&[7]).count(), 1);
        assert_eq!(padded::<u8>(&[]).count(), 0);
    }

    #[test]
    fn placeholders_are_numbered_row_major() {
        assert_eq!(Dialect::Postgres.values_list(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Dialect::Postgres.in_list(3), "$1, $2, $3");
        assert_eq!(Dialect::Sqlite.values_list(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Dialect::Sqlite.in_list(1), "?");
        assert_eq!(Dialect::Postgres.values_list(1, 3), "($1, $2, $3)");
    }
}
