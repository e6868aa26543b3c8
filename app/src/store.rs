//! Persistence with sqlx: templates, immutable versions, labels and their history,
//! playground runs, API keys. SQLite file by default (WAL), PostgreSQL when `DATABASE_URL`
//! says `postgres://`; the same queries run on both (through sqlx's `Any` driver, `$n`
//! placeholders, times as Unix milliseconds, JSON as text).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::template::{FieldError, TemplateFile, TemplateMeta, VersionSpec};

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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TemplateInfo {
    pub name: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub language: String,
    /// `library` (from prompts/) or `user`.
    pub source: String,
    pub latest_version: i64,
    pub labels: BTreeMap<String, i64>,
    /// `production` moves only to a version that evals at least as well (see `evals::check_gate`).
    pub eval_gate: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateInfo {
    pub fn meta(&self) -> TemplateMeta {
        TemplateMeta {
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            language: self.language.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionInfo {
    pub version: i64,
    pub spec: VersionSpec,
    pub content_hash: String,
    pub note: String,
    pub author: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelEvent {
    pub label: String,
    pub from_version: Option<i64>,
    pub to_version: i64,
    pub actor: String,
    pub at: i64,
}

/// One playground / template-endpoint run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Run {
    pub id: i64,
    pub template: Option<String>,
    pub version: Option<i64>,
    pub variables: Value,
    pub prompt: String,
    pub parameters: Value,
    pub output: String,
    pub finish_reason: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    /// `api` (template endpoint) or `studio`.
    pub source: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKeyInfo {
    pub name: String,
    /// The first characters of the key, so a person can tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What importing a template file did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImportOutcome {
    pub name: String,
    pub version: i64,
    pub created_template: bool,
    /// The file's content equals the latest version: nothing was written.
    pub unchanged: bool,
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
        && !label.strip_prefix('v').is_some_and(|r| r.parse::<i64>().is_ok());
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

#[derive(Debug, Default)]
pub struct Faults {
    point: Mutex<Option<&'static str>>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    faults: std::sync::Arc<Faults>,
}

/// `DATABASE_URL`, or the default SQLite file under the current directory.
pub fn database_url_from_env() -> String {
    std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        let dir = std::env::var("STUDIO_DATA_DIR").unwrap_or_else(|_| "data".into());
        format!("sqlite://{}/studio.db", dir.trim_end_matches('/'))
    })
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
        Ok(Self { pool, backend, faults: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Makes the next write transaction fail at `point` (tests of atomicity).
    pub fn inject_fault(&self, point: &'static str) {
        *self.faults.point.lock().unwrap() = Some(point);
    }

    fn fault(&self, point: &'static str) -> Result<()> {
        let mut p = self.faults.point.lock().unwrap();
        if *p == Some(point) {
            *p = None;
            return Err(StoreError::Injected(point));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ templates

    fn template_from_row(row: &AnyRow) -> Result<TemplateInfo> {
        let tags: String = row.try_get("tags")?;
        Ok(TemplateInfo {
            name: row.try_get("name")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            tags: serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("tags: {e}")))?,
            language: row.try_get("language")?,
            source: row.try_get("source")?,
            latest_version: row.try_get("version_count")?,
            labels: BTreeMap::new(),
            eval_gate: row.try_get::<i64, _>("eval_gate")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    async fn template_id(&self, name: &str) -> Result<i64> {
        sqlx::query("SELECT id FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>("id"))
            .transpose()?
            .ok_or_else(|| not_found(name))
    }

    pub async fn get_template(&self, name: &str) -> Result<TemplateInfo> {
        let row = sqlx::query("SELECT * FROM templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found(name))?;
        let mut t = Self::template_from_row(&row)?;
        let id: i64 = row.try_get("id")?;
        for l in sqlx::query("SELECT label, version FROM labels WHERE template_id = $1 ORDER BY label")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
        {
            t.labels.insert(l.try_get("label")?, l.try_get("version")?);
        }
        Ok(t)
    }

    /// All templates, by name, with their labels.
    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        Ok(self.list_templates_with_latest().await?.into_iter().map(|(t, _)| t).collect())
    }

    /// All templates, by name, with their labels and latest version, in two queries.
    pub async fn list_templates_with_latest(&self) -> Result<Vec<(TemplateInfo, VersionInfo)>> {
        let rows = sqlx::query(
            "SELECT t.*, v.version, v.spec, v.content_hash, v.note, v.author, v.created_at AS version_created_at \
             FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version_count \
             ORDER BY t.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut by_id = BTreeMap::new();
        for row in &rows {
            by_id.insert(row.try_get::<i64, _>("id")?, out.len());
            out.push((Self::template_from_row(row)?, version_from_row(row, "version_created_at")?));
        }
        for l in sqlx::query("SELECT template_id, label, version FROM labels").fetch_all(&self.pool).await? {
            if let Some(&i) = by_id.get(&l.try_get::<i64, _>("template_id")?) {
                out[i].0.labels.insert(l.try_get("label")?, l.try_get("version")?);
            }
        }
        Ok(out)
    }

    /// Creates a template with its version 1, atomically. 409 when the name is taken.
    pub async fn create_template(
        &self,
        meta: &TemplateMeta,
        spec: &VersionSpec,
        note: &str,
        author: &str,
        source: &str,
    ) -> Result<(TemplateInfo, VersionInfo)> {
        meta.validate()?;
        spec.validate()?;
        let mut tx = self.pool.begin().await?;
        let result = self.insert_template(&mut tx, meta, spec, note, author, source).await;
        let version = finish(tx, result).await?;
        Ok((self.get_template(&meta.name).await?, version))
    }

    async fn insert_template(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        meta: &TemplateMeta,
        spec: &VersionSpec,
        note: &str,
        author: &str,
        source: &str,
    ) -> Result<VersionInfo> {
        let now = now_ms();
        // The insert is the transaction's first statement: on SQLite a read first would
        // pin a snapshot that cannot be upgraded to a write while another writer is busy.
        let inserted = sqlx::query(
            "INSERT INTO templates (name, title, description, tags, language, source, version_count, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING id",
        )
        .bind(&meta.name)
        .bind(&meta.title)
        .bind(&meta.description)
        .bind(serde_json::to_string(&meta.tags).unwrap())
        .bind(&meta.language)
        .bind(source)
        .bind(now)
        .fetch_one(&mut **tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("a template named '{}' already exists", meta.name)))
            }
            Err(e) => return Err(e.into()),
        };
        self.fault("after_template_insert")?;
        insert_version(tx, id, 1, spec, note, author, now).await
    }

    /// Changes title, description, tags or language (not versioned).
    pub async fn update_meta(&self, name: &str, meta: &TemplateMeta) -> Result<TemplateInfo> {
        meta.validate()?;
        if meta.name != name {
            return Err(FieldError::new("name", "a template cannot be renamed; create a new one").into());
        }
        let done = sqlx::query(
            "UPDATE templates SET title = $1, description = $2, tags = $3, language = $4, updated_at = $5 WHERE name = $6",
        )
        .bind(&meta.title)
        .bind(&meta.description)
        .bind(serde_json::to_string(&meta.tags).unwrap())
        .bind(&meta.language)
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(name));
        }
        self.get_template(name).await
    }

    /// Deletes a template with its versions, labels and runs.
    pub async fn delete_template(&self, name: &str) -> Result<()> {
        let id = self.template_id(name).await?;
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM eval_results WHERE run_id IN (SELECT id FROM eval_runs WHERE template_id = $1)",
            "DELETE FROM eval_runs WHERE template_id = $1",
            "DELETE FROM test_cases WHERE template_id = $1",
            "DELETE FROM runs WHERE template_id = $1",
            "DELETE FROM label_events WHERE template_id = $1",
            "DELETE FROM labels WHERE template_id = $1",
            "DELETE FROM template_versions WHERE template_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM templates WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------ versions

    /// Saves `spec` as the next version. Concurrent saves of one template get distinct,
    /// consecutive numbers: the counter bump is the transaction's first write, so it takes
    /// the row lock (Postgres) or the write lock (SQLite) before anything is read.
    pub async fn create_version(
        &self,
        name: &str,
        spec: &VersionSpec,
        note: &str,
        author: &str,
    ) -> Result<VersionInfo> {
        spec.validate()?;
        if note.chars().count() > crate::template::MAX_NOTE_CHARS {
            return Err(
                FieldError::new("note", format!("at most {} characters", crate::template::MAX_NOTE_CHARS)).into()
            );
        }
        let mut attempt = 0;
        loop {
            match self.try_create_version(name, spec, note, author).await {
                Err(StoreError::Db(e)) if is_busy(&e) && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_create_version(
        &self,
        name: &str,
        spec: &VersionSpec,
        note: &str,
        author: &str,
    ) -> Result<VersionInfo> {
        let mut tx = self.pool.begin().await?;
        let result = self.bump_and_insert(&mut tx, name, spec, note, author).await;
        finish(tx, result).await
    }

    async fn bump_and_insert(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        name: &str,
        spec: &VersionSpec,
        note: &str,
        author: &str,
    ) -> Result<VersionInfo> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE templates SET version_count = version_count + 1, updated_at = $1 WHERE name = $2 \
             RETURNING id, version_count",
        )
        .bind(now)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| not_found(name))?;
        let (id, version): (i64, i64) = (row.try_get("id")?, row.try_get("version_count")?);
        self.fault("after_version_bump")?;
        insert_version(tx, id, version, spec, note, author, now).await
    }

    pub async fn list_versions(&self, name: &str) -> Result<Vec<VersionInfo>> {
        let id = self.template_id(name).await?;
        let rows = sqlx::query("SELECT * FROM template_versions WHERE template_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| version_from_row(r, "created_at")).collect()
    }

    pub async fn get_version(&self, name: &str, version: i64) -> Result<VersionInfo> {
        let id = self.template_id(name).await?;
        let row = sqlx::query("SELECT * FROM template_versions WHERE template_id = $1 AND version = $2")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("template '{name}' has no version {version}")))?;
        version_from_row(&row, "created_at")
    }

    /// A template and the version a reference points at.
    pub async fn resolve(&self, name: &str, reference: &VersionRef) -> Result<(TemplateInfo, VersionInfo)> {
        let t = self.get_template(name).await?;
        let n = match reference {
            VersionRef::Number(n) => *n,
            VersionRef::Latest => t.latest_version,
            VersionRef::ProductionOrLatest => t.labels.get("production").copied().unwrap_or(t.latest_version),
            VersionRef::Label(l) => *t.labels.get(l).ok_or_else(|| {
                let known: Vec<&str> = t.labels.keys().map(String::as_str).collect();
                StoreError::NotFound(format!(
                    "template '{name}' has no label '{l}' (labels: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
            })?,
        };
        let v = self.get_version(name, n).await?;
        Ok((t, v))
    }

    // ------------------------------------------------------------------ labels

    /// Points `label` at `version`; returns the version it pointed at before. Every move is
    /// recorded in the label's history.
    pub async fn set_label(&self, name: &str, label: &str, version: i64, actor: &str) -> Result<Option<i64>> {
        validate_label(label)?;
        let mut tx = self.pool.begin().await?;
        let result = self.move_label(&mut tx, name, label, version, actor).await;
        finish(tx, result).await
    }

    async fn move_label(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        name: &str,
        label: &str,
        version: i64,
        actor: &str,
    ) -> Result<Option<i64>> {
        // Lock the template row first (as create_version does) so moves are serialised.
        let row = sqlx::query("UPDATE templates SET updated_at = $1 WHERE name = $2 RETURNING id, version_count")
            .bind(now_ms())
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let (id, count): (i64, i64) = (row.try_get("id")?, row.try_get("version_count")?);
        if version < 1 || version > count {
            return Err(StoreError::NotFound(format!("template '{name}' has no version {version} (1..={count})")));
        }
        let from: Option<i64> = sqlx::query("SELECT version FROM labels WHERE template_id = $1 AND label = $2")
            .bind(id)
            .bind(label)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("version"))
            .transpose()?;
        let now = now_ms();
        if from.is_some() {
            sqlx::query(
                "UPDATE labels SET version = $1, updated_at = $2, updated_by = $3 WHERE template_id = $4 AND label = $5",
            )
            .bind(version)
            .bind(now)
            .bind(actor)
            .bind(id)
            .bind(label)
            .execute(&mut **tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO labels (template_id, label, version, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(label)
            .bind(version)
            .bind(now)
            .bind(actor)
            .execute(&mut **tx)
            .await?;
        }
        self.fault("after_label_write")?;
        sqlx::query(
            "INSERT INTO label_events (template_id, label, from_version, to_version, actor, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(label)
        .bind(from)
        .bind(version)
        .bind(actor)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(from)
    }

    pub async fn delete_label(&self, name: &str, label: &str, actor: &str) -> Result<()> {
        let id = self.template_id(name).await?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM labels WHERE template_id = $1 AND label = $2 RETURNING version")
            .bind(id)
            .bind(label)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("template '{name}' has no label '{label}'")))?;
        let from: i64 = done.try_get("version")?;
        // A removal is recorded as a move to version 0.
        sqlx::query(
            "INSERT INTO label_events (template_id, label, from_version, to_version, actor, at) VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(id)
        .bind(label)
        .bind(from)
        .bind(actor)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn label_history(&self, name: &str) -> Result<Vec<LabelEvent>> {
        let id = self.template_id(name).await?;
        let rows = sqlx::query("SELECT * FROM label_events WHERE template_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LabelEvent {
                    label: r.try_get("label")?,
                    from_version: r.try_get("from_version")?,
                    to_version: r.try_get("to_version")?,
                    actor: r.try_get("actor")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ import

    /// Imports one template file: creates the template, or adds a version when the content
    /// differs from the latest one (an unchanged file writes nothing). All or nothing.
    pub async fn import_file(&self, file: &TemplateFile, author: &str, source: &str) -> Result<ImportOutcome> {
        let meta = file.meta();
        let spec = file.spec();
        meta.validate()?;
        spec.validate()?;
        match self.get_template(&meta.name).await {
            Err(StoreError::NotFound(_)) => {
                match self.create_template(&meta, &spec, &file.note, author, source).await {
                    Ok((t, v)) => {
                        return Ok(ImportOutcome {
                            name: t.name,
                            version: v.version,
                            created_template: true,
                            unchanged: false,
                        })
                    }
                    // Someone created it meanwhile: fall through to adding a version.
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let t = self.get_template(&meta.name).await?;
        let latest = self.get_version(&meta.name, t.latest_version).await?;
        if latest.content_hash == spec.content_hash() {
            if t.meta() != meta {
                self.update_meta(&meta.name, &meta).await?;
            }
            return Ok(ImportOutcome {
                name: t.name,
                version: latest.version,
                created_template: false,
                unchanged: true,
            });
        }
        let v = self.create_version(&meta.name, &spec, &file.note, author).await?;
        if t.meta() != meta {
            self.update_meta(&meta.name, &meta).await?;
        }
        Ok(ImportOutcome { name: t.name, version: v.version, created_template: false, unchanged: false })
    }

    // ------------------------------------------------------------------ runs

    pub async fn record_run(&self, run: &Run) -> Result<i64> {
        let template_id = match &run.template {
            Some(name) => Some(self.template_id(name).await?),
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO runs (template_id, version, variables, prompt, parameters, output, finish_reason, prompt_tokens, \
             completion_tokens, cached_tokens, latency_ms, ttft_ms, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(template_id)
        .bind(run.version)
        .bind(run.variables.to_string())
        .bind(&run.prompt)
        .bind(run.parameters.to_string())
        .bind(&run.output)
        .bind(&run.finish_reason)
        .bind(run.prompt_tokens)
        .bind(run.completion_tokens)
        .bind(run.cached_tokens)
        .bind(run.latency_ms)
        .bind(run.ttft_ms)
        .bind(&run.source)
        .bind(if run.created_at > 0 { run.created_at } else { now_ms() })
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The latest runs of a template, newest first.
    pub async fn list_runs(&self, name: &str, limit: i64) -> Result<Vec<Run>> {
        let id = self.template_id(name).await?;
        let rows = sqlx::query("SELECT * FROM runs WHERE template_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let json = |col: &str| -> Result<Value> { json_col(r, col) };
                Ok(Run {
                    id: r.try_get("id")?,
                    template: Some(name.to_string()),
                    version: r.try_get("version")?,
                    variables: json("variables")?,
                    prompt: r.try_get("prompt")?,
                    parameters: json("parameters")?,
                    output: r.try_get("output")?,
                    finish_reason: r.try_get("finish_reason")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    cached_tokens: r.try_get("cached_tokens")?,
                    latency_ms: r.try_get("latency_ms")?,
                    ttft_ms: r.try_get("ttft_ms")?,
                    source: r.try_get("source")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ API keys

    /// Creates a key and returns it; only its hash is stored, so this is the one time it is seen.
    pub async fn create_key(&self, name: &str) -> Result<String> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
        let key = format!("sk-studio-{}", crate::template::hex(&bytes));
        self.add_key(name, &key).await?;
        Ok(key)
    }

    /// Stores a key chosen elsewhere (e.g. `STUDIO_API_KEY` in a deployment).
    pub async fn add_key(&self, name: &str, key: &str) -> Result<()> {
        if name.trim().is_empty() || name.chars().count() > 64 {
            return Err(FieldError::new("name", "a key name is 1 to 64 characters").into());
        }
        if key.len() < 16 {
            return Err(FieldError::new("key", "an API key is at least 16 characters").into());
        }
        let prefix: String = key.chars().take(14).collect();
        let res = sqlx::query("INSERT INTO api_keys (name, prefix, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(prefix)
            .bind(key_hash(key))
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a key named '{name}' (or this very key) already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query("SELECT name, prefix, created_at, revoked_at FROM api_keys ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    pub async fn revoke_key(&self, name: &str) -> Result<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no active key named '{name}'")));
        }
        Ok(())
    }

    pub async fn active_key_count(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// The name of the active key `key` is, if any.
    pub async fn verify_key(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
            .bind(key_hash(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }
}

pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::template::hex(&Sha256::digest(key.as_bytes()))
}

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

/// A JSON TEXT column, decoded; bad JSON is reported as corrupt data naming the column.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(r: &sqlx::any::AnyRow, col: &str) -> Result<T> {
    let s: String = r.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
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

async fn insert_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    template_id: i64,
    version: i64,
    spec: &VersionSpec,
    note: &str,
    author: &str,
    now: i64,
) -> Result<VersionInfo> {
    let spec_json = serde_json::to_string(spec).expect("spec serializes");
    let hash = spec.content_hash();
    sqlx::query(
        "INSERT INTO template_versions (template_id, version, spec, content_hash, note, author, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(template_id)
    .bind(version)
    .bind(spec_json)
    .bind(&hash)
    .bind(note)
    .bind(author)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(VersionInfo {
        version,
        spec: spec.clone(),
        content_hash: hash,
        note: note.to_string(),
        author: author.to_string(),
        created_at: now,
    })
}

/// `created_col` names the version's creation time (aliased when joined with templates).
fn version_from_row(row: &AnyRow, created_col: &str) -> Result<VersionInfo> {
    let spec: String = row.try_get("spec")?;
    Ok(VersionInfo {
        version: row.try_get("version")?,
        spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("version spec: {e}")))?,
        content_hash: row.try_get("content_hash")?,
        note: row.try_get("note")?,
        author: row.try_get("author")?,
        created_at: row.try_get(created_col)?,
    })
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
