//! Storage behaviour on both databases: every test runs on a fresh SQLite file and on a
//! fresh schema of the PostgreSQL server at 127.0.0.1:5432 (database `test`), or
//! `STUDIO_TEST_POSTGRES_URL`.

use std::collections::BTreeSet;

mod support;

use app::store::{Backend, Store, StoreError, VersionRef};
use app::templates::{Example, Format, TemplateFile, TemplateMeta, VersionSpec};
use support::TestDb;

fn meta(name: &str) -> TemplateMeta {
    TemplateMeta {
        name: name.into(),
        title: "영화 리뷰 감정 分類 テスト".into(),
        description: "리뷰가 긍정인지 부정인지 — 映画レビューの感情".into(),
        tags: vec!["classification".into(), "감정".into()],
        language: "ko".into(),
    }
}

fn spec(instruction: &str) -> VersionSpec {
    VersionSpec {
        instruction: instruction.into(),
        examples: vec![
            Example { input: "배우들의 연기가 정말 훌륭했다 👍".into(), output: "긍정".into() },
            Example { input: "この映画は退屈だった".into(), output: "부정".into() },
        ],
        input_pattern: "{{리뷰}}".into(),
        format: Format {
            example_separator: "\n\n".into(),
            input_prefix: "문장: ".into(),
            io_separator: "\n".into(),
            output_prefix: "감정: ".into(),
        },
        ..VersionSpec::default()
    }
}

macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = TestDb::new(Backend::Sqlite).await;
                $body(&db.store).await;
                db.drop_schema().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = TestDb::new(Backend::Postgres).await;
                $body(&db.store).await;
                db.drop_schema().await;
            }
        }
    };
}

async fn versions_are_immutable(store: &Store) {
    let (t, v1) =
        store.create_template(&meta("sentiment"), &spec("분류하세요."), "first", "ann", "user").await.unwrap();
    assert_eq!((t.latest_version, v1.version), (1, 1));
    let v2 = store.create_version("sentiment", &spec("감정을 분류하세요."), "clearer", "bob").await.unwrap();
    assert_eq!(v2.version, 2);
    // Version 1 is untouched by saving version 2.
    let again = store.get_version("sentiment", 1).await.unwrap();
    assert_eq!(again.spec, v1.spec);
    assert_eq!(again.note, "first");
    // The database itself refuses to rewrite a version.
    let err = sqlx::query("UPDATE template_versions SET note = 'rewritten' WHERE version = 1")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert_eq!(store.get_version("sentiment", 1).await.unwrap().note, "first");
    let listed = store.list_versions("sentiment").await.unwrap();
    assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    // A second template with the same name is a conflict, not an overwrite.
    let dup = store.create_template(&meta("sentiment"), &spec("x"), "", "eve", "user").await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup}");
    assert_eq!(store.get_version("sentiment", 1).await.unwrap().spec, v1.spec);
}
both!(immutable_versions, versions_are_immutable);

async fn labels_move_and_roll_back(store: &Store) {
    store.create_template(&meta("labels"), &spec("v1"), "", "ann", "user").await.unwrap();
    store.create_version("labels", &spec("v2"), "", "ann").await.unwrap();
    store.create_version("labels", &spec("v3"), "", "ann").await.unwrap();
    assert_eq!(store.set_label("labels", "production", 2, "ann").await.unwrap(), None);
    assert_eq!(store.set_label("labels", "production", 3, "bob").await.unwrap(), Some(2));
    let (_, v) = store.resolve("labels", &VersionRef::parse("production")).await.unwrap();
    assert_eq!(v.spec.instruction, "v3");
    // Rollback: move production back.
    assert_eq!(store.set_label("labels", "production", 2, "carol").await.unwrap(), Some(3));
    let (_, v) = store.resolve("labels", &VersionRef::parse("production")).await.unwrap();
    assert_eq!(v.spec.instruction, "v2");
    let (_, latest) = store.resolve("labels", &VersionRef::Latest).await.unwrap();
    assert_eq!(latest.version, 3);
    let history = store.label_history("labels").await.unwrap();
    let moves: Vec<(Option<i64>, i64, &str)> =
        history.iter().map(|e| (e.from_version, e.to_version, e.actor.as_str())).collect();
    assert_eq!(moves, vec![(None, 2, "ann"), (Some(2), 3, "bob"), (Some(3), 2, "carol")]);
    assert!(history.windows(2).all(|w| w[0].at <= w[1].at));
    // A label cannot point at a version that does not exist.
    assert!(matches!(store.set_label("labels", "production", 9, "x").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_label("labels", "latest", 1, "x").await, Err(StoreError::Invalid(_))));
    store.delete_label("labels", "production", "dan").await.unwrap();
    assert!(store.get_template("labels").await.unwrap().labels.is_empty());
}
both!(label_moves, labels_move_and_roll_back);

async fn concurrent_saves_get_consecutive_versions(store: &Store) {
    store.create_template(&meta("race"), &spec("base"), "", "ann", "user").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.create_version("race", &spec(&format!("edit {i}")), &format!("writer {i}"), "w").await.unwrap()
        }));
    }
    let mut numbers = BTreeSet::new();
    for t in tasks {
        numbers.insert(t.await.unwrap().version);
    }
    assert_eq!(numbers, (2..=13).collect::<BTreeSet<i64>>(), "no lost or duplicate version");
    let versions = store.list_versions("race").await.unwrap();
    assert_eq!(versions.len(), 13);
    let notes: BTreeSet<String> = versions.iter().skip(1).map(|v| v.note.clone()).collect();
    assert_eq!(notes.len(), 12, "every writer's content was saved");
    for v in &versions[1..] {
        assert_eq!(v.spec.instruction, format!("edit {}", v.note.trim_start_matches("writer ")));
    }
    assert_eq!(store.get_template("race").await.unwrap().latest_version, 13);
}
both!(concurrent_saves, concurrent_saves_get_consecutive_versions);

async fn a_failure_between_writes_leaves_nothing_half_saved(store: &Store) {
    store.create_template(&meta("atomic"), &spec("v1"), "", "ann", "user").await.unwrap();
    store.inject_fault("after_version_bump");
    let err = store.create_version("atomic", &spec("v2"), "", "ann").await.unwrap_err();
    assert!(matches!(err, StoreError::Injected(_)), "{err}");
    // The counter bump was rolled back with the rest: the next save is version 2.
    assert_eq!(store.get_template("atomic").await.unwrap().latest_version, 1);
    assert_eq!(store.list_versions("atomic").await.unwrap().len(), 1);
    assert_eq!(store.create_version("atomic", &spec("v2"), "", "ann").await.unwrap().version, 2);

    store.inject_fault("after_template_insert");
    assert!(store.create_template(&meta("never"), &spec("x"), "", "ann", "user").await.is_err());
    assert!(matches!(store.get_template("never").await, Err(StoreError::NotFound(_))));
    // The name is free again: nothing half-created blocks it.
    store.create_template(&meta("never"), &spec("x"), "", "ann", "user").await.unwrap();

    store.inject_fault("after_label_write");
    assert!(store.set_label("atomic", "production", 1, "ann").await.is_err());
    assert!(store.get_template("atomic").await.unwrap().labels.is_empty());
    assert!(store.label_history("atomic").await.unwrap().is_empty());

    // A task dropped mid-transaction (a crashed request) also leaves nothing behind.
    let s = store.clone();
    let handle = tokio::spawn(async move { s.create_version("atomic", &spec("v3"), "", "ann").await });
    handle.abort();
    let _ = handle.await;
    let count = store.get_template("atomic").await.unwrap().latest_version;
    assert_eq!(store.list_versions("atomic").await.unwrap().len() as i64, count);
}
both!(atomic_writes, a_failure_between_writes_leaves_nothing_half_saved);

async fn cjk_round_trips_byte_for_byte(store: &Store) {
    let m = meta("cjk");
    let s = spec("다음 문장의 감정을 分類してください。中文也可以。");
    store.create_template(&m, &s, "한국어 메모 ✍️", "작성자", "user").await.unwrap();
    let t = store.get_template("cjk").await.unwrap();
    assert_eq!(t.meta(), m);
    let v = store.get_version("cjk", 1).await.unwrap();
    assert_eq!(v.spec, s);
    assert_eq!(v.note.as_bytes(), "한국어 메모 ✍️".as_bytes());
    assert_eq!(v.author, "작성자");
    // Import of an unchanged file writes nothing; a changed one makes the next version.
    let file = TemplateFile::from_parts(&m, &s, "");
    let o = store.import_file(&file, "loader", "library").await.unwrap();
    assert!(o.unchanged && o.version == 1, "{o:?}");
    let mut changed = file.clone();
    changed.examples.push(Example { input: "最高の映画！".into(), output: "긍정".into() });
    let o = store.import_file(&changed, "loader", "library").await.unwrap();
    assert_eq!((o.unchanged, o.version), (false, 2));
    let o = store.import_file(&changed, "loader", "library").await.unwrap();
    assert_eq!((o.unchanged, o.version), (true, 2));
}
both!(cjk_round_trip, cjk_round_trips_byte_for_byte);

async fn api_keys_store_only_hashes(store: &Store) {
    assert_eq!(store.active_key_count().await.unwrap(), 0);
    let key = store.create_key("ci").await.unwrap();
    assert!(key.starts_with("sk-studio-") && key.len() > 40);
    assert_eq!(store.verify_key(&key).await.unwrap().as_deref(), Some("ci"));
    assert_eq!(store.verify_key("sk-studio-wrong").await.unwrap(), None);
    let stored: Vec<String> = {
        use sqlx::Row;
        sqlx::query("SELECT hash FROM api_keys")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert!(!stored.iter().any(|h| h.contains(&key[10..])), "the key itself is never stored");
    store.revoke_key("ci").await.unwrap();
    assert_eq!(store.verify_key(&key).await.unwrap(), None);
    assert_eq!(store.active_key_count().await.unwrap(), 0);
}
both!(api_keys, api_keys_store_only_hashes);

/// Every file of the shipped library imports, idempotently, on a fresh database.
async fn shipped_library_imports(store: &Store) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts");
    let first = store.import_library(&dir).await;
    assert!(first.len() >= 12, "prompts/ ships at least 12 templates, found {}", first.len());
    for (path, r) in &first {
        let o = r.as_ref().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(o.created_template, "{o:?}");
    }
    for (path, r) in store.import_library(&dir).await {
        let o = r.unwrap();
        assert!(o.unchanged && o.version == 1, "{}: re-import wrote a version: {o:?}", path.display());
    }
    let templates = store.list_templates().await.unwrap();
    assert_eq!(templates.len(), first.len());
    assert!(templates.iter().all(|t| t.source == "library"));
    let languages: BTreeSet<&str> = templates.iter().map(|t| t.language.as_str()).collect();
    for l in ["ko", "ja", "en"] {
        assert!(languages.contains(l), "the library has {l} templates: {languages:?}");
    }
}
both!(shipped_library, shipped_library_imports);

/// A shipped template a user deletes stays deleted at the next start (import), until the
/// library is restored; a user's own template of that name clears the mark.
async fn deleted_shipped_templates_stay_deleted(store: &Store) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts");
    let imported = store.import_library(&dir).await;
    let name = "movie-sentiment-ko";
    assert!(store.get_template(name).await.is_ok(), "the library ships {name}");
    store.create_version(name, &spec("두 번째 버전"), "v2", "me").await.unwrap();
    let seen = store.template_footprint(name).await.unwrap();
    assert_eq!((seen.versions, seen.shipped), (2, true), "{seen:?}");
    let gone = store.delete_template(name).await.unwrap();
    assert_eq!(gone, seen, "delete answers what it removed");
    assert!(matches!(store.get_template(name).await, Err(StoreError::NotFound(_))));

    let again = store.import_library(&dir).await;
    assert_eq!(again.len(), imported.len());
    let (_, skipped) = again.iter().find(|(p, _)| p.ends_with(format!("{name}.toml"))).unwrap();
    let reason = skipped.as_ref().unwrap_err();
    assert!(reason.contains("--restore-library"), "{reason}");
    assert!(matches!(store.get_template(name).await, Err(StoreError::NotFound(_))), "not re-imported");
    // The others are untouched.
    assert_eq!(store.list_templates().await.unwrap().len(), imported.len() - 1);

    assert_eq!(store.restore_library().await.unwrap(), 1);
    store.import_library(&dir).await;
    assert_eq!(store.template_footprint(name).await.unwrap().versions, 1, "back as shipped");

    // A user's template is never marked: deleting it and importing brings nothing back.
    store.create_template(&meta("mine"), &spec("내 템플릿"), "", "me", "studio").await.unwrap();
    assert!(!store.delete_template("mine").await.unwrap().shipped);
    assert!(!store.is_deleted_by_user("mine").await.unwrap());
    // Deleting a shipped one, then creating it by hand, clears the mark.
    store.delete_template(name).await.unwrap();
    assert!(store.is_deleted_by_user(name).await.unwrap());
    store.create_template(&meta(name), &spec("직접 만든"), "", "me", "studio").await.unwrap();
    assert!(!store.is_deleted_by_user(name).await.unwrap());
}
both!(deleted_shipped, deleted_shipped_templates_stay_deleted);
