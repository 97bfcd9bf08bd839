//! The store's one error type.
//!
//! Errors describe what failed and where, never the data involved: no
//! notification body, no order field beyond the key that names it, and
//! never the merchant key (which the store does not hold in the first
//! place). SQLite's own messages name tables and constraints, not bound
//! values, so they are safe to carry.

use std::path::PathBuf;

/// Every failure of a [`Store`](super::Store).
///
/// Business outcomes (an order already exists, a transition is refused, a
/// refund would exceed the order) are not errors: they are the `Ok` values
/// of the trait's methods. An error means the operation did not happen and
/// nothing was written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("store {path}: cannot open: {detail}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        detail: String,
    },
    /// A SQLite call failed: I/O, a full disk, a lock held too long
    /// (`database is locked` after the busy timeout), or a constraint.
    #[error("store: {op} failed: {detail}")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's message (names tables and constraints, never values).
        detail: String,
    },
    /// A setting SQLite did not take, e.g. WAL on a file system without
    /// shared memory. The store refuses to run with weaker durability.
    #[error("store: PRAGMA {pragma} is {found:?}, {wanted} is required")]
    PragmaRefused {
        /// The pragma.
        pragma: &'static str,
        /// The value the store needs.
        wanted: &'static str,
        /// The value SQLite reports.
        found: String,
    },
    /// The database was migrated by a newer build of wxpay. Running older
    /// code against it could misread or damage it, so it is not opened.
    #[error(
        "store: the database has schema version {found}, this build knows up to {known}; upgrade wxpay"
    )]
    SchemaTooNew {
        /// The highest version recorded in the database.
        found: i64,
        /// The highest version this build can apply.
        known: i64,
    },
    /// A stored value this build cannot read back: an unknown state name,
    /// a negative amount, a gap in the applied migrations.
    #[error("store: corrupt {what}: {detail}")]
    Corrupt {
        /// Which value or table.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An amount or counter does not fit SQLite's signed 64-bit integer, or
    /// reaches 2^53 fen in Redis (whose scripts add in doubles).
    #[error("store: {field} is too large to store")]
    AmountOutOfRange {
        /// The field.
        field: &'static str,
    },
    /// The Redis server could not be reached or refused the connection.
    #[error("store {url}: cannot connect: {detail}")]
    Connect {
        /// The server's URL, with any password replaced.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A Redis command failed or timed out (a write that timed out may
    /// still have been applied; every write is safe to repeat).
    #[error("store: {op} failed: {detail}")]
    Redis {
        /// The store operation.
        op: &'static str,
        /// The client's or server's message.
        detail: String,
    },
    /// The Redis server does not fsync every write, so an acknowledged
    /// write could be lost in a crash.
    #[error(
        "store: Redis {setting} is {found:?}, {wanted} is required (an ACK must never outlive a crash)"
    )]
    RedisNotDurable {
        /// The server setting.
        setting: &'static str,
        /// The value the store needs.
        wanted: &'static str,
        /// The value the server has.
        found: String,
    },
    /// A caller-supplied value the store will not write (e.g. an audit
    /// detail that is not JSON).
    #[error("store: {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// A SQLite failure while doing `op`.
    pub(crate) fn sqlite(op: &'static str, e: &rusqlite::Error) -> Self {
        Self::Sqlite {
            op,
            detail: e.to_string(),
        }
    }

    /// A Redis failure while doing `op`.
    pub(crate) fn redis(op: &'static str, e: &redis::RedisError) -> Self {
        Self::Redis {
            op,
            detail: e.to_string(),
        }
    }

    /// A stored value that cannot be read back.
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Attaches the operation's name to a rusqlite result.
pub(crate) trait SqlContext<T> {
    /// Maps a rusqlite error to [`StoreError::Sqlite`] with `op`.
    fn ctx(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::sqlite(op, &e))
    }
}
