//! Prompt templates: what a version holds, how it is validated, rendered into the exact
//! prompt the model sees, diffed against another version, read from / written to the
//! `prompts/` TOML file format, and the shipped library.

mod diff;
mod file;
pub mod library;
mod spec;

pub use diff::*;
pub use file::*;
pub use spec::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-shot Korean sentiment spec, as a client would send it.
    fn sentiment() -> VersionSpec {
        serde_json::from_value(serde_json::json!({
            "instruction": "영화 리뷰의 감정을 분류하세요.",
            "examples": [{"input": "정말 재미있었어요", "output": "긍정"}, {"input": "시간 낭비였다", "output": "부정"}],
            "input_pattern": "{{ 리뷰 }}",
            "format": {"example_separator": "\n\n", "input_prefix": "문장: ", "io_separator": "\n", "output_prefix": "감정: "}
        }))
        .expect("a valid spec")
    }

    #[test]
    fn diff_reports_text_examples_and_values() {
        let a = sentiment();
        let mut b = sentiment();
        b.instruction = "영화 리뷰의 감정을 긍정 또는 부정으로 분류하세요.".into();
        b.examples[1].output = "중립".into();
        b.examples.push(Example { input: "그냥 그랬다".into(), output: "중립".into() });
        b.parameters.temperature = 0.5;
        let d = serde_json::to_value(diff(&a, &b)).unwrap();
        assert_eq!(d["unchanged"], false);
        assert_eq!(d["text"][0]["field"], "instruction");
        let inserted: String = d["text"][0]["ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["op"] == "insert")
            .map(|o| o["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(inserted, "긍정 또는 부정으로 ");
        assert_eq!(d["examples"][0]["index"], 1);
        assert_eq!(d["examples"][0]["change"], "modified");
        assert_eq!(d["examples"][1]["change"], "added");
        assert_eq!(d["values"][0]["field"], "parameters.temperature");
        assert_eq!(d["values"][0]["old"], 0.0);
        assert_eq!(d["values"][0]["new"], 0.5);
        assert!(diff(&a, &a).unchanged);
        assert!(d.get("from").is_none(), "the handler adds which versions were compared");
    }

    #[test]
    fn file_round_trips_and_errors_name_line_and_field() {
        let meta = TemplateMeta {
            name: "movie-sentiment-ko".into(),
            title: "영화 리뷰 감정".into(),
            description: "긍정/부정".into(),
            tags: vec!["classification".into()],
            language: "ko".into(),
        };
        let file = TemplateFile::from_parts(&meta, &sentiment(), "첫 버전");
        let text = file.to_toml();
        let back = TemplateFile::parse(&text).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.spec(), sentiment());

        let bad = text.replace("temperature = 0.0", "temperature = 5.0");
        assert_ne!(bad, text, "fixture must contain the temperature line:\n{text}");
        let e = TemplateFile::parse(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("parameters.temperature"));
        let line = bad.lines().position(|l| l.starts_with("temperature")).unwrap() + 1;
        assert_eq!(e.line, Some(line), "{e}");

        let e = TemplateFile::parse("name = \"x\"\ntemprature = 1\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.field.as_deref(), Some("temprature"));

        let e = TemplateFile::parse(
            "name = \"ok\"\n[[examples]]\ninput = \"a\"\noutput = \"b\"\n[[examples]]\ninput = \"c\"\noutput = \"\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("examples[1].output"));
        assert_eq!(e.line, Some(7), "{e}");

        let e = TemplateFile::parse("name = \"ok\"\ninstruction = \"unterminated\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
