//! Storage of files and batch jobs on both databases: replicas claiming lines under
//! leases, each line answered once, finalizing into output files, cancel, atomic create;
//! and eval-run ownership between replicas.

mod support;

use std::collections::HashSet;

use app::batches::{parse_input, NewLine};
use app::evals::{EvalPlan, EvalSettings, EvalStatus};
use app::store::{BatchInput, LineAnswer, Store};
use app::templates::{TemplateMeta, VersionSpec};
use support::on_both;

fn lines(n: usize) -> Vec<NewLine> {
    let text: String = (0..n)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"req-{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\
                 \"body\":{{\"prompt\":\"p{}\",\"max_tokens\":1}}}}\n",
                i % 3
            )
        })
        .collect();
    parse_input(&text, "/v1/completions").unwrap()
}

fn ok(n: i64) -> LineAnswer {
    LineAnswer { status_code: 200, request_id: format!("req_{n}"), body: serde_json::json!({"n": n}) }
}

async fn batch(s: &Store, n: usize) -> String {
    let file = s.create_file("batch", "in.jsonl", "unused").await.unwrap();
    s.create_batch("/v1/completions", BatchInput::File(&file.id), None, &lines(n), "tester").await.unwrap().id
}

#[tokio::test]
async fn replicas_share_lines_and_each_is_answered_once() {
    on_both(|db| async move {
        let a = db.store.clone().with_replica("replica-a", 30_000);
        let b = db.store.clone().with_replica("replica-b", 30_000);
        let id = batch(&a, 30).await;
        let got_a = a.claim_lines(10).await.unwrap();
        let got_b = b.claim_lines(100).await.unwrap();
        assert_eq!((got_a.len(), got_b.len()), (10, 20));
        let ids: HashSet<i64> = got_a.iter().chain(&got_b).map(|l| l.id).collect();
        assert_eq!(ids.len(), 30, "no line claimed twice");
        assert!(a.claim_lines(10).await.unwrap().is_empty(), "nothing left to claim");
        // A replica cannot answer a line it does not hold.
        assert!(!a.finish_line(&got_b[0], &ok(0)).await.unwrap());
        for l in &got_a {
            assert!(a.finish_line(l, &ok(l.line_no)).await.unwrap());
            assert!(!a.finish_line(l, &ok(l.line_no)).await.unwrap(), "answered once");
        }
        assert!(!a.finalize_if_done(&id).await.unwrap(), "lines still open");
        assert_eq!(a.batch(&id).await.unwrap().request_counts.completed, 10);
        for l in &got_b {
            let outcome = if l.line_no == 7 {
                LineAnswer { status_code: 400, request_id: "r".into(), body: serde_json::json!({"error": {}}) }
            } else {
                ok(l.line_no)
            };
            assert!(b.finish_line(l, &outcome).await.unwrap());
        }
        assert!(b.finalize_if_done(&id).await.unwrap());
        assert!(!a.finalize_if_done(&id).await.unwrap(), "finalized once");
        let done = a.batch(&id).await.unwrap();
        assert_eq!(done.status, "completed");
        let counts = done.request_counts;
        assert_eq!((counts.total, counts.completed, counts.failed), (30, 29, 1));
        let out = a.file_content(done.output_file_id.as_deref().unwrap()).await.unwrap();
        let out: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(out.len(), 29);
        let customs: Vec<String> = out.iter().map(|v| v["custom_id"].as_str().unwrap().to_string()).collect();
        let want: Vec<String> = (0..30).filter(|i| *i != 6).map(|i| format!("req-{i}")).collect();
        assert_eq!(customs, want, "in input order, line 7 (req-6) in the error file");
        assert_eq!(out[0]["response"]["status_code"], 200);
        let errors = a.file_content(done.error_file_id.as_deref().unwrap()).await.unwrap();
        assert!(errors.contains("\"req-6\"") && errors.contains("\"status_code\":400"), "{errors}");
        db
    })
    .await;
}

#[tokio::test]
async fn an_expired_claim_passes_to_another_replica_and_the_old_answer_is_dropped() {
    on_both(|db| async move {
        let a = db.store.clone().with_replica("replica-a", 40);
        let b = db.store.clone().with_replica("replica-b", 30_000);
        let id = batch(&a, 4).await;
        let held = a.claim_lines(4).await.unwrap();
        assert!(b.claim_lines(4).await.unwrap().is_empty(), "a live claim is not taken");
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        let taken = b.claim_lines(4).await.unwrap();
        assert_eq!(taken.len(), 4, "the expired claims pass to b");
        assert!(!a.finish_line(&held[0], &ok(1)).await.unwrap(), "a's late answer is dropped");
        for l in &taken {
            assert!(b.finish_line(l, &ok(l.line_no)).await.unwrap());
        }
        assert_eq!(b.sweep_batches().await.unwrap(), 1);
        let done = b.batch(&id).await.unwrap();
        assert_eq!((done.status.as_str(), done.request_counts.completed), ("completed", 4));
        db
    })
    .await;
}

#[tokio::test]
async fn concurrent_claims_never_overlap() {
    on_both(|db| async move {
        batch(&db.store, 120).await;
        let mut tasks = Vec::new();
        for r in 0..4 {
            let s = db.store.clone().with_replica(&format!("r{r}"), 30_000);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s.claim_lines(7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|l| l.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), distinct.len()), (120, 120));
        db
    })
    .await;
}

#[tokio::test]
async fn cancel_stops_unclaimed_lines_and_keeps_answers() {
    on_both(|db| async move {
        let s = &db.store;
        let id = batch(s, 5).await;
        let held = s.claim_lines(2).await.unwrap();
        let b = s.cancel_batch(&id).await.unwrap();
        assert_eq!(b.status, "cancelling", "two lines still run");
        assert!(s.claim_lines(5).await.unwrap().is_empty());
        for l in &held {
            assert!(s.finish_line(l, &ok(l.line_no)).await.unwrap());
        }
        assert!(s.finalize_if_done(&id).await.unwrap());
        let b = s.batch(&id).await.unwrap();
        assert_eq!((b.status.as_str(), b.request_counts.completed), ("cancelled", 2));
        assert!(b.cancelled_at.is_some());
        let errors = s.file_content(b.error_file_id.as_deref().unwrap()).await.unwrap();
        assert_eq!(errors.matches("batch_cancelled").count(), 3, "{errors}");
        assert!(matches!(s.cancel_batch(&id).await, Err(app::store::StoreError::Conflict(_))));
        db
    })
    .await;
}

#[tokio::test]
async fn a_failed_create_leaves_nothing() {
    on_both(|db| async move {
        let s = &db.store;
        let file = s.create_file("batch", "in.jsonl", "x").await.unwrap();
        s.inject_fault("batch-lines");
        assert!(s.create_batch("/v1/completions", BatchInput::File(&file.id), None, &lines(600), "t").await.is_err());
        assert!(s.list_batches(None, 10, None).await.unwrap().0.is_empty());
        assert!(s.claim_lines(10).await.unwrap().is_empty(), "no orphan lines");
        db
    })
    .await;
}

fn plan() -> EvalPlan {
    EvalPlan {
        template: "t".into(),
        version: None,
        spec: VersionSpec::default(),
        settings: EvalSettings { n: 1, temperature: 0.0, seed: 1, max_tokens: 4, model: "m".into(), tp: 1 },
    }
}

#[tokio::test]
async fn a_replica_interrupts_only_its_own_or_abandoned_eval_runs() {
    on_both(|db| async move {
        let meta = TemplateMeta { name: "t".into(), language: "en".into(), ..Default::default() };
        let spec = VersionSpec { input_pattern: "{{x}}".into(), ..Default::default() };
        db.store.create_template(&meta, &spec, "", "test", "user").await.unwrap();
        let a = db.store.clone().with_replica("replica-a", 150);
        let b = db.store.clone().with_replica("replica-b", 30_000);
        let run_a = a.create_eval_run(&plan(), 3, "t").await.unwrap();
        a.start_eval_run(run_a).await.unwrap();
        let run_b = b.create_eval_run(&plan(), 3, "t").await.unwrap();
        // b restarts: its own run is interrupted, a's live run is not.
        assert_eq!(b.interrupt_stale_evals().await.unwrap(), 1);
        assert_eq!(b.eval_run(run_b).await.unwrap().status, EvalStatus::Interrupted);
        assert_eq!(b.eval_run(run_a).await.unwrap().status, EvalStatus::Running);
        assert_eq!(b.interrupt_abandoned_evals().await.unwrap(), 0);
        // a keeps renewing while it lives...
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(a.renew_eval_leases().await.unwrap(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(b.interrupt_abandoned_evals().await.unwrap(), 0, "renewed: still a's");
        // ...and once it stops renewing, the run is abandoned.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(b.interrupt_abandoned_evals().await.unwrap(), 1);
        assert_eq!(b.eval_run(run_a).await.unwrap().status, EvalStatus::Interrupted);
        db
    })
    .await;
}

#[tokio::test]
async fn a_new_input_file_is_written_with_its_batch_or_not_at_all() {
    on_both(|db| async move {
        let s = &db.store;
        let input = BatchInput::New { filename: "t-v1-requests.jsonl", content: "{}\n" };
        let endpoint = "/v1/templates/a_b@1/completions";
        s.inject_fault("batch-lines");
        assert!(s.create_batch(endpoint, input, None, &lines(3), "t").await.is_err());
        assert!(s.list_files(None, 10).await.unwrap().is_empty(), "no orphan input file");
        let b = s.create_batch(endpoint, input, None, &lines(3), "t").await.unwrap();
        let file = s.file(&b.input_file_id).await.unwrap();
        assert_eq!((file.purpose.as_str(), file.filename.as_str()), ("batch", "t-v1-requests.jsonl"));
        assert_eq!(s.file_content(&file.id).await.unwrap(), "{}\n");

        // Listed by template: any version of `a_b`, not `axb` (no `_` wildcard) nor `a_bc`.
        let other = s.create_batch("/v1/templates/axb@1/completions", input, None, &lines(1), "t").await.unwrap();
        let longer = s.create_batch("/v1/templates/a_bc/completions", input, None, &lines(1), "t").await.unwrap();
        let bare = s.create_batch("/v1/templates/a_b/completions", input, None, &lines(1), "t").await.unwrap();
        let ids = |t: &'static str| async move {
            s.list_batches(None, 10, Some(t)).await.unwrap().0.into_iter().map(|b| b.id).collect::<HashSet<_>>()
        };
        assert_eq!(ids("a_b").await, HashSet::from([b.id.clone(), bare.id.clone()]));
        assert_eq!(ids("axb").await, HashSet::from([other.id.clone()]));
        assert_eq!(ids("a_bc").await, HashSet::from([longer.id.clone()]));
        assert_eq!(s.list_batches(None, 10, None).await.unwrap().0.len(), 4);
        db
    })
    .await;
}
