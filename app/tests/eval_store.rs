//! Storage of test sets and eval runs on both databases: every test runs on a fresh SQLite
//! file and on a fresh schema of the PostgreSQL server at 127.0.0.1:5432 (database `test`),
//! or `STUDIO_TEST_POSTGRES_URL`.

mod support;

use app::evals::{Assertion, EvalPlan, EvalSettings, EvalStatus, RowResult, TestRow};
use app::store::ImportMode;
use app::store::{Store, StoreError};
use app::templates::{Example, TemplateMeta, VersionSpec};
use support::on_both;

async fn template(store: &Store, name: &str) {
    let meta = TemplateMeta { name: name.into(), language: "ko".into(), ..Default::default() };
    let spec = VersionSpec {
        examples: vec![Example { input: "배우들 연기가 좋았다".into(), output: "긍정".into() }],
        input_pattern: "{{리뷰}}".into(),
        ..Default::default()
    };
    store.create_template(&meta, &spec, "", "test", "user").await.unwrap();
}

fn row(review: &str, expected: Option<&str>) -> TestRow {
    TestRow {
        variables: [("리뷰".to_string(), review.to_string())].into(),
        expected: expected.map(str::to_string),
        assertions: vec![Assertion::OneOf { values: vec!["긍정".into(), "부정".into()] }],
    }
}

fn plan(name: &str, version: Option<i64>) -> EvalPlan {
    EvalPlan {
        template: name.into(),
        version,
        spec: VersionSpec::default(),
        settings: EvalSettings {
            n: 2,
            temperature: 0.7,
            seed: u64::MAX - 1,
            max_tokens: 8,
            model: "gemma3-270m".into(),
            tp: 2,
        },
    }
}

fn result(index: i64, passed: bool) -> RowResult {
    RowResult {
        index,
        variables: [("리뷰".to_string(), format!("리뷰 {index} 映画"))].into(),
        expected: Some("긍정".into()),
        output: "긍정".into(),
        samples: vec!["긍정".into(), "부정".into()],
        stability: 0.5,
        passed,
        prompt_tokens: 10,
        completion_tokens: 2,
        cached_tokens: 6,
        latency_ms: 5,
        ..Default::default()
    }
}

#[tokio::test]
async fn test_sets_replace_append_and_roll_back_whole() {
    on_both(|db| async move {
        let s = &db.store;
        template(s, "gamjeong").await;
        let rows = vec![row("최고의 영화 👍", Some("긍정")), row("つまらない", Some("부정")), row("그냥 그래", None)];
        assert_eq!(s.import_tests("gamjeong", &rows, ImportMode::Replace).await.unwrap(), 3);
        assert_eq!(s.import_tests("gamjeong", &rows[..1], ImportMode::Append).await.unwrap(), 4);
        let listed = s.list_tests("gamjeong").await.unwrap();
        assert_eq!(listed.iter().map(|c| c.row.clone()).collect::<Vec<_>>()[..3], rows[..]);
        assert_eq!(listed[3].row, rows[0]);
        assert_eq!(listed.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);

        // Too many rows in a replace: the delete is rolled back with the rest.
        let many = vec![row("x", None); app::evals::MAX_TEST_ROWS + 1];
        let err = s.import_tests("gamjeong", &many, ImportMode::Replace).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(ref fe) if fe.field == "file"), "{err}");
        assert_eq!(s.list_tests("gamjeong").await.unwrap().len(), 4, "nothing half-imported");

        assert_eq!(s.import_tests("gamjeong", &rows[2..], ImportMode::Replace).await.unwrap(), 1);
        assert_eq!(s.list_tests("gamjeong").await.unwrap()[0].row, rows[2]);
        assert!(matches!(s.import_tests("없음", &rows, ImportMode::Replace).await, Err(StoreError::NotFound(_))));
        s.delete_tests("gamjeong").await.unwrap();
        assert!(s.list_tests("gamjeong").await.unwrap().is_empty());
        db
    })
    .await;
}

#[tokio::test]
async fn eval_runs_progress_cancel_and_interrupt_on_restart() {
    on_both(|db| async move {
        let s = &db.store;
        template(s, "t").await;
        let id = s.create_eval_run(&plan("t", Some(1)), 3, "tester").await.unwrap();
        let run = s.eval_run(id).await.unwrap();
        assert_eq!((run.status, run.total, run.done, run.pass_rate), (EvalStatus::Queued, 3, 0, None));
        assert_eq!(
            (run.seed, run.temperature, run.model.as_str(), run.tp, run.n),
            (u64::MAX - 1, 0.7, "gemma3-270m", 2, 2)
        );
        assert!(!s.record_eval_result(id, &result(0, true)).await.unwrap(), "not running yet: nothing recorded");
        assert!(s.start_eval_run(id).await.unwrap());
        assert!(!s.start_eval_run(id).await.unwrap(), "starts once");
        assert!(s.record_eval_result(id, &result(1, true)).await.unwrap());
        assert!(s.record_eval_result(id, &result(0, false)).await.unwrap());
        let run = s.eval_run(id).await.unwrap();
        assert_eq!((run.status, run.done, run.passed, run.pass_rate), (EvalStatus::Running, 2, 1, Some(0.5)));
        assert_eq!((run.prompt_tokens, run.completion_tokens, run.cached_tokens), (20, 4, 12));
        assert_eq!(run.stability, Some(0.5));
        let results = s.eval_results(id).await.unwrap();
        assert_eq!(results, vec![result(0, false), result(1, true)], "in row order, round-tripped");

        let cancelled = s.cancel_eval_run(id).await.unwrap();
        assert_eq!(cancelled.status, EvalStatus::Cancelled);
        assert!(cancelled.finished_at.is_some());
        assert!(!s.record_eval_result(id, &result(2, true)).await.unwrap());
        assert_eq!(s.eval_results(id).await.unwrap().len(), 2);
        assert!(matches!(s.cancel_eval_run(id).await, Err(StoreError::Conflict(_))));
        assert!(matches!(s.eval_run(9999).await, Err(StoreError::NotFound(_))));

        // Left running and queued by a server that stopped: a restart marks them interrupted.
        let running = s.create_eval_run(&plan("t", None), 5, "tester").await.unwrap();
        s.start_eval_run(running).await.unwrap();
        let queued = s.create_eval_run(&plan("t", Some(1)), 5, "tester").await.unwrap();
        s.close().await;
        let reopened = Store::connect(&db.url).await.unwrap();
        assert_eq!(reopened.interrupt_stale_evals().await.unwrap(), 2);
        for r in [running, queued] {
            let run = reopened.eval_run(r).await.unwrap();
            assert_eq!(run.status, EvalStatus::Interrupted);
            assert!(run.error.as_deref().unwrap().contains("stopped"));
        }
        assert_eq!(reopened.eval_run(id).await.unwrap().status, EvalStatus::Cancelled, "ended runs stay as they were");
        assert_eq!(reopened.interrupt_stale_evals().await.unwrap(), 0);
        let listed = reopened.list_eval_runs("t", 10).await.unwrap();
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![queued, running, id]);
        assert_eq!(listed[1].version, None, "a draft run");
        db.with_store(reopened)
    })
    .await;
}

#[tokio::test]
async fn gate_scores_use_the_latest_completed_eval_of_a_version() {
    on_both(|db| async move {
        let s = &db.store;
        template(s, "g").await;
        assert_eq!(s.latest_completed_eval("g", 1).await.unwrap(), None);
        let a = s.create_eval_run(&plan("g", Some(1)), 2, "x").await.unwrap();
        s.start_eval_run(a).await.unwrap();
        s.record_eval_result(a, &result(0, true)).await.unwrap();
        s.record_eval_result(a, &result(1, false)).await.unwrap();
        assert_eq!(s.latest_completed_eval("g", 1).await.unwrap(), None, "running runs do not count");
        assert!(s.finish_eval_run(a, EvalStatus::Completed, None).await.unwrap());
        assert_eq!(s.latest_completed_eval("g", 1).await.unwrap(), Some((a, 0.5)));
        // A newer cancelled run does not replace it; a newer completed one does.
        let b = s.create_eval_run(&plan("g", Some(1)), 1, "x").await.unwrap();
        s.start_eval_run(b).await.unwrap();
        s.record_eval_result(b, &result(0, true)).await.unwrap();
        s.cancel_eval_run(b).await.unwrap();
        assert_eq!(s.latest_completed_eval("g", 1).await.unwrap(), Some((a, 0.5)));
        let c = s.create_eval_run(&plan("g", Some(1)), 1, "x").await.unwrap();
        s.start_eval_run(c).await.unwrap();
        s.record_eval_result(c, &result(0, true)).await.unwrap();
        s.finish_eval_run(c, EvalStatus::Completed, None).await.unwrap();
        assert_eq!(s.latest_completed_eval("g", 1).await.unwrap(), Some((c, 1.0)));

        // The gate flag, and the gate itself at store level.
        assert!(!s.get_template("g").await.unwrap().eval_gate, "off by default");
        s.set_eval_gate("g", true).await.unwrap();
        assert!(s.get_template("g").await.unwrap().eval_gate);
        app::evals::check_gate(s, "g", "production", 1).await.unwrap();
        let v2 = s.create_version("g", &VersionSpec::default(), "", "x").await.unwrap().version;
        let err = app::evals::check_gate(s, "g", "production", v2).await.unwrap_err();
        assert!(matches!(err, app::evals::EvalError::Gate { .. }), "{err}");
        app::evals::check_gate(s, "g", "staging", v2).await.unwrap();

        // Deleting the template removes its tests and runs.
        s.import_tests("g", &[row("a", None)], ImportMode::Replace).await.unwrap();
        s.delete_template("g").await.unwrap();
        assert!(matches!(s.eval_run(a).await, Err(StoreError::NotFound(_))));
        template(s, "g").await;
        assert!(s.list_tests("g").await.unwrap().is_empty());
        assert!(s.list_eval_runs("g", 10).await.unwrap().is_empty());
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_appends_get_unique_positions_and_right_counts() {
    on_both(|db| async move {
        let s = db.store.clone();
        template(&s, "dongsi").await;
        let appends: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.import_tests("dongsi", &[row(&format!("리뷰 {i}"), None)], ImportMode::Append).await.unwrap()
                })
            })
            .collect();
        let mut counts = Vec::new();
        for a in appends {
            counts.push(a.await.unwrap());
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<i64>>(), "each append saw the ones before it");
        let listed = s.list_tests("dongsi").await.unwrap();
        assert_eq!(listed.len(), 20);
        assert_eq!(listed.iter().map(|c| c.index).collect::<Vec<_>>(), (0..20).collect::<Vec<i64>>());
        db
    })
    .await;
}
