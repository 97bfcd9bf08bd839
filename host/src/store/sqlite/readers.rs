//! Read connections, apart from the writer.
//!
//! Why: in WAL mode readers never wait for the writer, and each read
//! transaction sees the last committed state. Reads on their own
//! connections therefore neither queue behind a batch that is waiting for
//! the disk nor see a batch before it is durable (see
//! [`super::group_commit`]). A store in memory has no file to share, so
//! its reads go through the writer's connection.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags};

use super::super::StoreResult;
use super::super::error::{SqlContext as _, StoreError};
use super::group_commit::{GroupCommit, Writer};
use super::{BUSY_TIMEOUT, STATEMENT_CACHE};

/// Idle read connections kept for reuse; more are opened under load and
/// closed when returned to a full pool.
const IDLE_READERS: usize = 8;

/// Where reads go.
#[derive(Debug)]
pub(super) enum Readers {
    /// Pooled read-only connections to the database file.
    File {
        path: PathBuf,
        idle: Mutex<Vec<Connection>>,
    },
    /// Through the writer (a store in memory).
    Writer,
}

/// A connection lent for one read.
pub(super) enum Reader<'a> {
    Pooled {
        conn: Option<Connection>,
        pool: &'a Mutex<Vec<Connection>>,
    },
    Writer(MutexGuard<'a, Writer>),
}

impl Readers {
    /// Read connections to the file at `path`.
    pub(super) fn file(path: &Path) -> Self {
        Self::File {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection for one read.
    pub(super) fn get<'a>(&'a self, writer: &'a GroupCommit) -> StoreResult<Reader<'a>> {
        match self {
            Self::File { path, idle } => {
                let reused = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let conn = match reused {
                    Some(conn) => conn,
                    None => open_reader(path)?,
                };
                Ok(Reader::Pooled {
                    conn: Some(conn),
                    pool: idle,
                })
            }
            Self::Writer => Ok(Reader::Writer(writer.lock())),
        }
    }
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("set busy_timeout")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    super::stable_plans(&conn)?;
    Ok(conn)
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Self::Pooled {
                conn: Some(conn), ..
            } => conn,
            Self::Pooled { conn: None, .. } => {
                unreachable!("a reader keeps its connection until dropped")
            }
            Self::Writer(writer) => writer.conn(),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Self::Pooled { conn, pool } = self {
            let mut idle = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.extend(conn.take());
            }
        }
    }
}
