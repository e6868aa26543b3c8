//! Persistence with sqlx: templates, immutable versions, labels and their history,
//! playground runs, API keys. SQLite file by default (WAL), PostgreSQL when `DATABASE_URL`
//! says `postgres://`; the same queries run on both (through sqlx's `Any` driver, `$n`
//! placeholders, times as Unix milliseconds, JSON as text).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::templates::FieldError;

pub const DEFAULT_SQLITE_PATH: &str = "data/studio.db";
pub const MAX_LABEL_CHARS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A fault injected by a test between two writes of one transaction.
    #[cfg(any(test, feature = "fault-injection"))]
    #[error("injected fault at {0}")]
    Injected(&'static str),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

// The rows the API sends as they are: shared with the studio.
pub use api_types::templates::{ImportOutcome, LabelEvent, Run, TemplateInfo, VersionInfo};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKeyInfo {
    pub name: String,
    /// The first characters of the key, so a person can tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A version reference: a number, `latest`, or a label.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionRef {
    Number(i64),
    Latest,
    Label(String),
    /// What a template endpoint without `@ref` serves: `production` when set, else latest.
    ProductionOrLatest,
}

impl VersionRef {
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        let digits = s.strip_prefix('v').unwrap_or(s);
        match digits.parse::<i64>() {
            Ok(n) => VersionRef::Number(n),
            Err(_) if s.is_empty() || s == "latest" => VersionRef::Latest,
            Err(_) => VersionRef::Label(s.to_string()),
        }
    }
}

pub fn validate_label(label: &str) -> std::result::Result<(), FieldError> {
    let ok = !label.is_empty()
        && label.chars().count() <= MAX_LABEL_CHARS
        && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
        && label != "latest"
        && label.parse::<i64>().is_err()
        && label.strip_prefix('v').is_none_or(|r| r.parse::<i64>().is_err());
    if !ok {
        return Err(FieldError::new(
            "label",
            format!(
                "a label is 1 to {MAX_LABEL_CHARS} letters, digits, '-', '_' or '.', not a number and not 'latest'; got {label:?}"
            ),
        ));
    }
    Ok(())
}

/// Test-only fault injection (the `fault-injection` feature, which the app's own tests
/// turn on): a write transaction can be made to fail between two of its writes.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Default)]
pub struct Faults {
    point: std::sync::Mutex<Option<&'static str>>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Who this process is among the replicas sharing the database: recorded on the eval
    /// runs and batch lines it owns ([`replica_id_from_env`]).
    replica: std::sync::Arc<str>,
    /// How long a claim (an eval run, a batch line) stays this replica's without renewal.
    lease_ms: i64,
    /// Wakes this process's batch worker when a batch is created here.
    batch_created: std::sync::Arc<tokio::sync::Notify>,
    #[cfg(any(test, feature = "fault-injection"))]
    faults: std::sync::Arc<Faults>,
}

/// `DATABASE_URL`, or the default SQLite file under the current directory.
pub fn database_url_from_env() -> String {
    std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        let dir = std::env::var("STUDIO_DATA_DIR").unwrap_or_else(|_| "data".into());
        format!("sqlite://{}/studio.db", dir.trim_end_matches('/'))
    })
}

/// Default lease: a replica renews every third of it, so two missed renewals are tolerated.
pub const DEFAULT_LEASE_SECS: i64 = 30;

/// `STUDIO_REPLICA_ID`, else the host name (a Kubernetes pod's name, a container's id),
/// so a process restarted on the same host is the same replica and takes back what it
/// left running at once. Several processes on one host sharing a database each need
/// their own `STUDIO_REPLICA_ID`.
pub fn replica_id_from_env() -> String {
    let id = std::env::var("STUDIO_REPLICA_ID").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let id = id.or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()?;
        Some(host.trim().to_string()).filter(|h| !h.is_empty())
    });
    id.unwrap_or_else(|| "studio".into()).chars().take(128).collect()
}

/// `STUDIO_LEASE_SECS` (1 to 3600), else [`DEFAULT_LEASE_SECS`].
pub fn lease_ms_from_env() -> i64 {
    let secs = std::env::var("STUDIO_LEASE_SECS").ok().and_then(|s| s.trim().parse::<i64>().ok());
    secs.filter(|s| (1..=3600).contains(s)).unwrap_or(DEFAULT_LEASE_SECS) * 1000
}

impl Store {
    /// Connects (creating the SQLite file and its folder when needed) and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(FieldError::new(
                "DATABASE_URL",
                "must start with sqlite:// or postgres://",
            )));
        };
        let mut url = url.to_string();
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path).to_string();
            if path != ":memory:" {
                if let Some(parent) = Path::new(&path).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", parent.display())))?;
                }
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
            // An in-memory database exists per connection: keep exactly one.
            let max = if path == ":memory:" { 1 } else { 8 };
            options =
                options.max_connections(max).min_connections(if max == 1 { 1 } else { 0 }).after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL: readers never block the writer; the busy timeout makes concurrent
                        // writers queue instead of failing.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 15000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            replica: replica_id_from_env().into(),
            lease_ms: lease_ms_from_env(),
            batch_created: Default::default(),
            #[cfg(any(test, feature = "fault-injection"))]
            faults: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// Resolves when a batch is next created through this store (other replicas' batches
    /// are found by polling).
    pub async fn batch_created(&self) {
        self.batch_created.notified().await
    }

    /// The same database as another replica would see it (tests, and `--replica-id`).
    pub fn with_replica(mut self, id: &str, lease_ms: i64) -> Self {
        self.replica = id.into();
        self.lease_ms = lease_ms.max(1);
        self
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Makes the next write transaction fail at `point` (tests of atomicity).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_fault(&self, point: &'static str) {
        *self.faults.point.lock().unwrap() = Some(point);
    }

    #[cfg(any(test, feature = "fault-injection"))]
    fn fault(&self, point: &'static str) -> Result<()> {
        let mut p = self.faults.point.lock().unwrap();
        if *p == Some(point) {
            *p = None;
            return Err(StoreError::Injected(point));
        }
        Ok(())
    }

    /// Without fault injection, a named point between two writes is just a comment.
    #[cfg(not(any(test, feature = "fault-injection")))]
    fn fault(&self, _point: &'static str) -> Result<()> {
        Ok(())
    }
}

mod batches;
mod evals;
mod keys;
mod rows;
mod runs;
mod templates;

pub use batches::{not_run, BatchInput, ClaimedLine, LineAnswer};
pub use evals::ImportMode;
pub use keys::key_hash;

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("no template named '{name}'"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || d.message().contains("UNIQUE constraint") || d.code().as_deref() == Some("23505")
        }
        _ => false,
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let m = d.message();
            m.contains("database is locked") || m.contains("busy") || d.code().as_deref() == Some("40001")
        }
        _ => false,
    }
}

/// Commits on success; on failure rolls back now (not lazily when the connection is
/// reused), so the write lock is released before the error reaches the caller.
pub(crate) async fn finish<T>(tx: sqlx::Transaction<'static, sqlx::Any>, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refs_parse() {
        assert_eq!(VersionRef::parse("3"), VersionRef::Number(3));
        assert_eq!(VersionRef::parse("v12"), VersionRef::Number(12));
        assert_eq!(VersionRef::parse("latest"), VersionRef::Latest);
        assert_eq!(VersionRef::parse("production"), VersionRef::Label("production".into()));
    }

    #[test]
    fn labels_are_validated() {
        assert!(validate_label("production").is_ok());
        assert!(validate_label("실험-1").is_ok());
        assert!(validate_label("latest").is_err());
        assert!(validate_label("3").is_err());
        assert!(validate_label("v3").is_err());
        assert!(validate_label("has space").is_err());
        assert!(validate_label("").is_err());
    }
}
