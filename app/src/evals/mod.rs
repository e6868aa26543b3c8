//! Evaluate and tune: a template's test set (CSV / JSONL import and export), assertions,
//! eval runs over the scheduler at batch priority, likelihood labelling, the production
//! eval gate. Few-shot selection is in [`crate::evals::select`].

use serde_json::Value;

use crate::store::StoreError;
use crate::templates::FieldError;

pub use api_types::evals::MAX_TEST_ROWS;
pub const MAX_ASSERTIONS: usize = 16;
pub const MAX_LABELS: usize = 32;
pub const MAX_SAMPLES: usize = 16;
/// Reserved test-set columns; every other column is a template variable.
pub const EXPECTED: &str = "expected";
pub const ASSERTIONS: &str = "assertions";

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A malformed file, request field or test row: 422 naming it.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The eval gate refused to move `production`: 409 with both scores.
    #[error("{message}")]
    Gate { message: String, candidate: Value, production: Value },
    /// Two runs scored different test sets, so their scores say nothing against each
    /// other: 409 with both hashes.
    #[error("{0}")]
    DifferentTestSets(String),
    /// The scheduler refused (batcher gone) or the model failed.
    #[error(transparent)]
    Model(#[from] crate::serving::ServeError),
}

mod assertions;
mod gate;
mod runner;
pub mod select;
mod testset;

pub use assertions::*;
pub use gate::*;
pub use runner::*;
pub use testset::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::VersionSpec;

    fn check(a: Assertion, out: &str, expected: Option<&str>) -> bool {
        a.check(out, expected, None).passed
    }

    #[test]
    fn every_assertion_type_passes_and_fails() {
        let v = |s: &str| s.to_string();
        assert!(check(Assertion::Exact { value: None }, " 긍정\n", Some("긍정")));
        assert!(!check(Assertion::Exact { value: None }, "긍정적", Some("긍정")));
        assert!(check(Assertion::Exact { value: Some(v("ok")) }, "ok", Some("no")));
        assert!(check(Assertion::Contains { value: v("東京") }, "首都は東京です", None));
        assert!(!check(Assertion::Contains { value: v("大阪") }, "首都は東京です", None));
        assert!(check(Assertion::NotContains { value: v("sorry") }, "Here you go", None));
        assert!(!check(Assertion::NotContains { value: v("sorry") }, "I am sorry", None));
        assert!(check(Assertion::Regex { pattern: v(r"^\d{3}-\d{4}$") }, "123-4567", None));
        assert!(!check(Assertion::Regex { pattern: v(r"^\d{3}-\d{4}$") }, "12-4567", None));
        assert!(!check(Assertion::Regex { pattern: v("(") }, "(", None), "an invalid regex never passes");
        assert!(check(Assertion::StartsWith { value: v("제목:") }, "제목: 봄 축제", None));
        assert!(!check(Assertion::StartsWith { value: v("제목:") }, "봄 축제", None));
        assert!(check(Assertion::OneOf { values: vec![v("긍정"), v("부정")] }, "부정", None));
        assert!(!check(Assertion::OneOf { values: vec![v("긍정"), v("부정")] }, "중립", None));
        assert!(check(Assertion::Json, r#"{"a": [1, 2]}"#, None));
        assert!(!check(Assertion::Json, r#"{"a": [1, 2}"#, None));
        assert!(check(Assertion::MaxLength { chars: 3 }, "가나다", None), "characters, not bytes");
        assert!(!check(Assertion::MaxLength { chars: 2 }, "가나다", None));
        let labels = vec![v("긍정"), v("부정")];
        let sc = LabelScores::new(&labels, &[-0.2, -3.0]);
        let a = Assertion::Likelihood { labels: labels.clone() };
        let r = a.check("whatever was generated", Some("긍정"), Some(&sc));
        assert!(r.passed);
        assert_eq!(r.chosen.as_deref(), Some("긍정"));
        assert!(!a.check("긍정", Some("부정"), Some(&sc)).passed, "likelihood ignores the generated text");
        assert!(!a.check("긍정", Some("긍정"), None).passed);
    }

    #[test]
    fn assertions_parse_tagged_by_type_and_validate() {
        let a: Vec<Assertion> = serde_json::from_str(
            r#"[{"type":"exact"},{"type":"one_of","values":["a","b"]},{"type":"json"},{"type":"max_length","chars":5},
                {"type":"likelihood","labels":["a","b"]},{"type":"not_contains","value":"x"}]"#,
        )
        .unwrap();
        assert_eq!(a[1], Assertion::OneOf { values: vec!["a".into(), "b".into()] });
        assert_eq!(serde_json::to_string(&a[0]).unwrap(), r#"{"type":"exact"}"#);
        assert!(serde_json::from_str::<Assertion>(r#"{"type":"fuzzy"}"#).is_err());
        let e = a[0].validate("rows[1].assertions[0]", None).unwrap_err();
        assert_eq!(e.field, "rows[1].assertions[0]");
        let e = Assertion::Regex { pattern: "(".into() }.validate("x", None).unwrap_err();
        assert_eq!(e.field, "x.pattern");
        let e = a[4].validate("x", Some("c")).unwrap_err();
        assert!(e.message.contains("not one of the labels"), "{e}");
        assert!(a[4].validate("x", Some("a")).is_ok());
    }

    #[test]
    fn csv_and_jsonl_round_trip_korean_and_japanese() {
        let csv_text = "\u{FEFF}review,note,expected,assertions\n\
            \"배우들 연기가 정말 좋았어요, 최고!\",\"映画は\"\"最高\"\"でした\",긍정,\"[{\"\"type\"\":\"\"one_of\"\",\"\"values\"\":[\"\"긍정\"\",\"\"부정\"\"]}]\"\n\
            \"두 줄\n리뷰\",,부정,\n\
            つまらない映画,ja,,\"[{\"\"type\"\":\"\"max_length\"\",\"\"chars\"\":4}]\"\n";
        let rows = parse(FileFormat::Csv, utf8(csv_text.as_bytes()).unwrap()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].variables["review"], "배우들 연기가 정말 좋았어요, 최고!");
        assert_eq!(rows[0].variables["note"], "映画は\"最高\"でした");
        assert_eq!(rows[1].variables["review"], "두 줄\n리뷰");
        assert_eq!(rows[1].variables["note"], "");
        assert_eq!(rows[2].expected, None);
        assert_eq!(rows[2].assertions, vec![Assertion::MaxLength { chars: 4 }]);
        for f in [FileFormat::Csv, FileFormat::Jsonl] {
            let text = export(f, &rows);
            let back = parse(f, &text).unwrap();
            assert_eq!(back, rows, "{f:?}");
            assert_eq!(export(f, &back), text, "{f:?}: export is a fixed point");
        }
    }

    #[test]
    fn malformed_files_name_row_and_column() {
        let e = parse(FileFormat::Csv, "review,expected\nok,긍정\nbad\n").unwrap_err();
        assert_eq!(e.field, "rows[2].expected", "{e}");
        assert!(e.message.contains("row 2 (line 3)"), "{e}");
        let e =
            parse(FileFormat::Csv, "review,assertions\nok,[]\nfine,\"[{\"\"type\"\":\"\"nope\"\"}]\"\n").unwrap_err();
        assert_eq!(e.field, "rows[2].assertions", "{e}");
        let e = parse(FileFormat::Csv, "review,review\na,b\n").unwrap_err();
        assert_eq!(e.field, "header");
        let e = parse(FileFormat::Jsonl, "{\"review\":\"좋아\"}\n\n{\"review\": 3}\n").unwrap_err();
        assert_eq!(e.field, "rows[2].review", "{e}");
        assert!(e.message.contains("line 3"), "{e}");
        let e = parse(
            FileFormat::Jsonl,
            "{\"review\":\"a\", \"expected\": \"x\", \"assertions\": [{\"type\":\"likelihood\",\"labels\":[\"y\"]}]}\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "rows[1].assertions[0].labels", "{e}");
        let e = utf8(b"review\n\xff\xfe\n").unwrap_err();
        assert!(e.message.contains("line 2"), "{e}");
        assert!(parse(FileFormat::Csv, "review\n").is_err(), "no rows");
    }

    #[test]
    fn strict_quoting_one_bom_and_known_columns() {
        for (bad, line) in
            [("review\nsay \"hi\"\n", 2), ("review,note\n\"ab\"c,x\n", 2), ("review\nok\n\"never closed\n", 3)]
        {
            let e = parse(FileFormat::Csv, bad).unwrap_err();
            assert_eq!(e.field, "file", "{bad:?}: {e}");
            assert!(e.message.contains(&format!("line {line}")), "{bad:?}: {e}");
        }
        assert!(parse(FileFormat::Csv, "review\r\n\"a \"\"b\"\"\r\nc\"\r\n").is_ok(), "CRLF, doubled quotes, newline");
        let e = utf8("\u{FEFF}\u{FEFF}review\nok\n".as_bytes()).unwrap_err();
        assert!(e.message.contains("two byte-order marks"), "{e}");
        assert_eq!(utf8("\u{FEFF}review\n".as_bytes()).unwrap(), "review\n");
        let rows = parse(FileFormat::Csv, "review,revew,expected\na,b,c\n").unwrap();
        let vars = vec!["review".to_string(), "lang".to_string()];
        let e = check_columns(&rows, "sentiment", &vars).unwrap_err();
        assert_eq!(e.field, "rows[1].revew");
        assert!(e.message.contains("'revew'") && e.message.contains("review, lang"), "{e}");
        assert!(check_columns(&rows[..0], "sentiment", &vars).is_ok());
    }

    #[test]
    fn majority_and_stability() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(majority(&s(&["a", " b", "b ", "c"])), (" b".to_string(), 0.5));
        assert_eq!(majority(&s(&["x"])), ("x".to_string(), 1.0));
    }

    #[test]
    fn continuation_restores_the_trimmed_output_prefix() {
        let mut spec = VersionSpec::default();
        spec.format.output_prefix = "감정: ".into();
        assert_eq!(continuation(&spec, "긍정"), " 긍정");
        spec.format.output_prefix = "Label:".into();
        assert_eq!(continuation(&spec, "x"), "x");
    }
}
