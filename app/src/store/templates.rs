//! Templates, their immutable versions, labels with history, and file import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::version_from_row;
use super::{
    finish, is_busy, is_unique_violation, not_found, now_ms, validate_label, ImportOutcome, LabelEvent, Result, Store,
    StoreError, TemplateInfo, VersionInfo, VersionRef,
};
use api_types::templates::TemplateFootprint;

use crate::templates::library;
use crate::templates::{FieldError, TemplateFile, TemplateMeta, VersionSpec};

impl Store {
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

    pub(super) async fn template_id(&self, name: &str) -> Result<i64> {
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
        // Made again by hand (or imported on purpose): no longer "deleted by a user".
        sqlx::query("DELETE FROM deleted_templates WHERE name = $1").bind(&meta.name).execute(&mut **tx).await?;
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

    /// Everything that belongs to a template: what deleting it removes.
    pub async fn template_footprint(&self, name: &str) -> Result<TemplateFootprint> {
        let id = self.template_id(name).await?;
        let count = move |sql: &'static str| async move {
            let row = sqlx::query(sql).bind(id).fetch_one(&self.pool).await?;
            Ok::<i64, StoreError>(row.try_get::<i64, _>("n")?)
        };
        let source: String = sqlx::query("SELECT source FROM templates WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?
            .try_get("source")?;
        Ok(TemplateFootprint {
            name: name.to_string(),
            versions: count("SELECT COUNT(*) AS n FROM template_versions WHERE template_id = $1").await?,
            test_cases: count("SELECT COUNT(*) AS n FROM test_cases WHERE template_id = $1").await?,
            eval_runs: count("SELECT COUNT(*) AS n FROM eval_runs WHERE template_id = $1").await?,
            runs: count("SELECT COUNT(*) AS n FROM runs WHERE template_id = $1").await?,
            shipped: source == "library",
        })
    }

    /// Deletes a template with its versions, labels, test cases, evals and runs, and answers
    /// what it removed. A shipped template is remembered as deleted, so the library import
    /// at the next start does not bring it back.
    pub async fn delete_template(&self, name: &str) -> Result<TemplateFootprint> {
        let footprint = self.template_footprint(name).await?;
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
        if footprint.shipped {
            sqlx::query(
                "INSERT INTO deleted_templates (name, deleted_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(footprint)
    }

    /// Whether a user deleted the shipped template `name` (the library import skips it).
    pub async fn is_deleted_by_user(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT name FROM deleted_templates WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Forgets which shipped templates users deleted, so the next library import brings
    /// them back; answers how many.
    pub async fn restore_library(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM deleted_templates").execute(&self.pool).await?.rows_affected())
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
        if note.chars().count() > crate::templates::MAX_NOTE_CHARS {
            return Err(
                FieldError::new("note", format!("at most {} characters", crate::templates::MAX_NOTE_CHARS)).into()
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

impl Store {
    /// Imports every file of the library folder `dir`; one result per file. Idempotent: an
    /// unchanged file writes nothing; a changed file becomes the template's next version. A
    /// broken file is reported and skipped; it never stops the server.
    pub async fn import_library(&self, dir: &Path) -> Vec<(PathBuf, std::result::Result<ImportOutcome, String>)> {
        let mut out = Vec::new();
        for path in library::files(dir) {
            let result = match library::read(&path) {
                Ok(file) => match self.is_deleted_by_user(&file.name).await {
                    Ok(true) => Err(format!(
                        "{}: deleted in the studio; start with --restore-library to import it again",
                        path.display()
                    )),
                    Ok(false) => self
                        .import_file(&file, "prompts/", "library")
                        .await
                        .map_err(|e| format!("{}: {e}", path.display())),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                },
                Err(e) => Err(e),
            };
            out.push((path, result));
        }
        out
    }
}
