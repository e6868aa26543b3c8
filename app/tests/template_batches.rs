//! A template over a dataset through `app()` + `oneshot`, on the real SmolLM2 model and a
//! real SQLite file: the dataset checked against the version, started as a batch, run by
//! the batch worker to `completed`, listed under its template, and its results
//! downloaded as CSV (BOM, header, one row per input in order, RFC 4180 quoting).

use std::time::Duration;

mod support;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};
use support::Ctx;

async fn ctx() -> Ctx {
    Ctx::new(support::shared_scheduler(16)).await
}

async fn create_template(c: &Ctx, name: &str) {
    let spec = json!({
        "instruction": "영화 리뷰의 감정을 긍정 또는 부정으로 분류하세요.",
        "input_pattern": "{{제목}}: {{리뷰}}",
        "format": {"input_prefix": "리뷰: ", "io_separator": "\n", "output_prefix": "감정: "},
        "parameters": {"temperature": 0, "max_tokens": 3, "stop": ["\n"]}
    });
    let (s, v) = c.call("POST", "/api/templates", Some(json!({"name": name, "spec": spec}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// A header, then: a value with a comma, a doubled quote and a newline; Korean; Japanese.
const CSV: &str = "\u{feff}리뷰,제목\r\n\"좋았다, 정말 \"\"최고\"\"\n또 볼래요\",첫째\r\n지루하고 길었다,둘째\r\n映画は最高でした,셋째\r\n";

fn dataset(format: &str, data: &str) -> Value {
    json!({"format": format, "data": data, "filename": "리뷰들.csv"})
}

async fn wait_over(c: &Ctx, id: &str) -> Value {
    for _ in 0..3000 {
        let (s, b) = c.call("GET", &format!("/v1/batches/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if matches!(b["status"].as_str(), Some("completed" | "failed" | "expired" | "cancelled")) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch {id} did not finish in 300 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_runs_as_a_batch_and_its_results_download_as_csv() {
    let c = ctx().await;
    create_template(&c, "ko-batch").await;

    // Before it runs: the columns beside the variables.
    let (s, chk) = c.call("POST", "/api/templates/ko-batch/batches/check", Some(dataset("csv", CSV))).await;
    assert_eq!(s, StatusCode::OK, "{chk}");
    assert_eq!(chk["columns"], json!(["리뷰", "제목"]));
    assert_eq!(chk["variables"], json!(["제목", "리뷰"]));
    assert_eq!((chk["rows"].as_u64(), chk["version"].as_i64()), (Some(3), Some(1)));
    assert_eq!((chk["unknown"].clone(), chk["missing"].clone()), (json!([]), json!([])));

    // Started before the worker runs, so it is still in progress when its results are asked for.
    let (s, batch) = c.call("POST", "/api/templates/ko-batch/batches", Some(dataset("csv", CSV))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{batch}");
    let id = batch["id"].as_str().unwrap().to_string();
    assert_eq!(batch["endpoint"], "/v1/templates/ko-batch@1/completions");
    assert_eq!(batch["metadata"], json!({"template": "ko-batch", "template_version": "1", "dataset": "리뷰들.csv"}));
    assert_eq!(batch["request_counts"]["total"], 3);
    let (s, err) = c.call("GET", &format!("/api/batches/{id}/results.csv"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("once it has finished"), "{err}");

    // The input file is an OpenAI batch file of the rows' requests.
    let (s, input) = c
        .raw("GET", &format!("/v1/files/{}/content", batch["input_file_id"].as_str().unwrap()), Body::empty(), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    let first: Value = serde_json::from_str(String::from_utf8(input).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["custom_id"], "row-1");
    assert_eq!(first["body"]["variables"]["리뷰"], "좋았다, 정말 \"최고\"\n또 볼래요");

    app::api::batches::spawn_worker(c.state.clone());
    let done = wait_over(&c, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"], json!({"total": 3, "completed": 3, "failed": 0}));

    // The results: BOM, header, the rows in input order with the values exactly as sent.
    let req = axum::http::Request::get(format!("/api/batches/{id}/results.csv")).body(Body::empty()).unwrap();
    let resp = tower::ServiceExt::oneshot(app::app(c.state.clone()), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_string();
    assert_eq!(disposition, format!("attachment; filename=\"ko-batch-v1-{id}-results.csv\""));
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 with a BOM");
    let text = std::str::from_utf8(&bytes[3..]).unwrap();
    assert!(
        text.starts_with("리뷰,제목,output,finish_reason,error\r\n\"좋았다, 정말 \"\"최고\"\"\n또 볼래요\",첫째,"),
        "{text}"
    );
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let cells = |i: usize| rows[i].iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(rows.len(), 3);
    assert_eq!(cells(0)[..2], ["좋았다, 정말 \"최고\"\n또 볼래요".to_string(), "첫째".to_string()]);
    assert_eq!(cells(1)[..2], ["지루하고 길었다".to_string(), "둘째".to_string()]);
    assert_eq!(cells(2)[..2], ["映画は最高でした".to_string(), "셋째".to_string()]);
    for i in 0..3 {
        assert!(matches!(cells(i)[3].as_str(), "stop" | "length"), "row {i}: {:?}", cells(i));
        assert_eq!(cells(i)[4], "", "row {i} has no error");
    }
    // The same answers as the output file, line by line.
    let (_, out) = c
        .raw("GET", &format!("/v1/files/{}/content", done["output_file_id"].as_str().unwrap()), Body::empty(), "")
        .await;
    let out: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (i, line) in out.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("row-{}", i + 1));
        assert_eq!(line["response"]["body"]["choices"][0]["text"].as_str().unwrap(), cells(i)[2]);
    }

    // JSONL runs too; the template's batches are listed newest first, with their metadata.
    let jsonl = "{\"제목\":\"넷째\",\"리뷰\":\"배우들이 멋졌다\"}\n";
    let (s, second) = c
        .call(
            "POST",
            "/api/templates/ko-batch/batches",
            Some(json!({"format": "jsonl", "data": jsonl, "version": "latest"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["metadata"]["dataset"], "dataset.jsonl");
    create_template(&c, "other").await;
    let (s, _) = c.call("POST", "/api/templates/other/batches", Some(dataset("csv", CSV))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, list) = c.call("GET", "/api/templates/ko-batch/batches?limit=100", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second["id"].as_str().unwrap(), id.as_str()], "only this template's, newest first");
    let (s, one) = c.call("GET", "/api/templates/ko-batch/batches?limit=1", None).await;
    assert_eq!((s, one["has_more"].as_bool(), one["data"].as_array().unwrap().len()), (StatusCode::OK, Some(true), 1));
    wait_over(&c, second["id"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datasets_are_refused_naming_the_field_and_nothing_is_created() {
    let c = ctx().await;
    create_template(&c, "ko-bad").await;
    let post = |body: Value| {
        let c = &c;
        async move { c.call("POST", "/api/templates/ko-bad/batches", Some(body)).await }
    };
    // A column that is not a variable: 422 naming it and listing the variables.
    let (s, e) = post(dataset("csv", "리뷰,제목,별점\na,b,5\n")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["param"], "data.별점");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("column '별점' is not a variable of template 'ko-bad' version 1; its variables: 제목, 리뷰"),
        "{msg}"
    );
    // The check lists it instead of refusing.
    let (s, chk) =
        c.call("POST", "/api/templates/ko-bad/batches/check", Some(dataset("csv", "리뷰,별점\na,5\n"))).await;
    assert_eq!(s, StatusCode::OK, "{chk}");
    assert_eq!((chk["unknown"].clone(), chk["missing"].clone()), (json!(["별점"]), json!(["제목"])));
    // A variable without a column.
    let (s, e) = post(dataset("jsonl", "{\"리뷰\":\"a\"}\n")).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("data.제목")), "{e}");
    // Unreadable files: 400 naming the line.
    for (format, data, want) in [
        ("csv", "리뷰,제목\n", "no rows"),
        ("csv", "", "no columns"),
        ("csv", "리뷰,제목\na,\"b\n", "line 2, field 2: a quoted field is never closed"),
        ("csv", "리뷰,제목\na,b\nc\n", "line 3"),
        ("jsonl", "{\"리뷰\":\"a\",\"제목\":\"b\"}\n{\"리뷰\":\"a\"}\n", "line 2: no value for column '제목'"),
        ("csv", "\u{feff}\u{feff}리뷰,제목\na,b\n", "two byte-order marks"),
    ] {
        let (s, e) = post(dataset(format, data)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{data:?}: {e}");
        assert_eq!(e["error"]["param"], "data", "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
    let (s, e) = post(json!({"format": "xlsx", "data": "a"})).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("format")), "{e}");
    let (s, e) = post(json!({"format": "csv", "data": "리뷰,제목\na,b\n", "version": "staging"})).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::NOT_FOUND, Some("version")), "{e}");
    let (s, e) = post(json!({"format": "csv", "data": "리뷰,제목\na,b\n", "rows": 1})).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("rows")), "{e}");
    let (s, e) = post(json!({"format": "csv", "data": "x", "filename": "a".repeat(256)})).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("filename")), "{e}");
    let (s, _) = c.call("POST", "/api/templates/nope/batches", Some(dataset("csv", CSV))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Over the size bound: refused naming `data` and the limit.
    let big = format!("리뷰,제목\n{}", "가,나\n".repeat(app::batches::MAX_FILE_BYTES / 8 + 1));
    assert!(big.len() > app::batches::MAX_FILE_BYTES);
    let (s, e) = post(dataset("csv", &big)).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("data")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains(&app::batches::MAX_FILE_BYTES.to_string()), "{e}");

    // Nothing was created by any of them.
    let (_, list) = c.call("GET", "/api/templates/ko-bad/batches", None).await;
    assert_eq!(list["data"], json!([]), "{list}");
    let (_, files) = c.call("GET", "/v1/files", None).await;
    assert_eq!(files["data"], json!([]), "{files}");
    let (s, e) = c.call("GET", "/api/templates/ko-bad/batches?limit=101", None).await;
    assert_eq!((s, e["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "{e}");
    let (s, _) = c.call("GET", "/api/templates/nope/batches", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = c.call("GET", "/api/batches/batch_nope/results.csv", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
