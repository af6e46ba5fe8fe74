//! Shared test support for the event-store tests: the backend-independent
//! suite, raw-SQL hooks and the PostgreSQL harness (`tollgate_tests::postgres`,
//! shared with the end-to-end drill).
#![allow(dead_code)]

pub mod suite;

/// Where each test's PostgreSQL database comes from: see `tests/src/postgres.rs`.
#[allow(unused_imports)] // not every test binary including this module uses PostgreSQL
pub use tollgate_tests::postgres as pg;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_control::store::{AnyBackend, AnyStore, PgStore, SqliteStore};

/// Raw SQL on a store's own database, bypassing the [`EventStore`] API (used to
/// prove the database itself refuses tampering).
///
/// [`EventStore`]: tollgate_control::store::EventStore
pub trait RawSql {
    /// Executes `sql`; the database error text on failure.
    fn raw_execute(&self, sql: String) -> impl Future<Output = Result<u64, String>> + Send;
}

impl RawSql for SqliteStore {
    async fn raw_execute(&self, sql: String) -> Result<u64, String> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }
}

impl RawSql for PgStore {
    async fn raw_execute(&self, sql: String) -> Result<u64, String> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }
}

impl RawSql for AnyStore {
    async fn raw_execute(&self, sql: String) -> Result<u64, String> {
        match self.inner() {
            AnyBackend::Sqlite(s) => s.raw_execute(sql).await,
            AnyBackend::Postgres(s) => s.raw_execute(sql).await,
        }
    }
}

/// A name no other test (or earlier run against a shared database) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
