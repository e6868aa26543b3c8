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
    use std::collections::BTreeMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sentiment() -> VersionSpec {
        VersionSpec {
            instruction: "영화 리뷰의 감정을 분류하세요.".into(),
            examples: vec![
                Example { input: "정말 재미있었어요".into(), output: "긍정".into() },
                Example { input: "시간 낭비였다".into(), output: "부정".into() },
            ],
            input_pattern: "{{ 리뷰 }}".into(),
            format: Format {
                example_separator: "\n\n".into(),
                input_prefix: "문장: ".into(),
                io_separator: "\n".into(),
                output_prefix: "감정: ".into(),
            },
            model: None,
            parameters: Parameters::default(),
        }
    }

    #[test]
    fn renders_the_exact_prompt_with_a_stable_prefix() {
        let spec = sentiment();
        assert_eq!(spec.variables(), vec!["리뷰"]);
        let r = spec.render(&vars(&[("리뷰", "배우들 연기가 최고")])).unwrap();
        assert_eq!(
            r.text(),
            "영화 리뷰의 감정을 분류하세요.\n\n문장: 정말 재미있었어요\n감정: 긍정\n\n문장: 시간 낭비였다\n감정: 부정\n\n문장: 배우들 연기가 최고\n감정:"
        );
        let r2 = spec.render(&vars(&[("리뷰", "다른 입력")])).unwrap();
        assert_eq!(r.prefix, r2.prefix);
        assert_ne!(r.suffix, r2.suffix);
    }

    #[test]
    fn missing_and_unknown_variables_are_named() {
        let spec = sentiment();
        let e = spec.render(&BTreeMap::new()).unwrap_err();
        assert_eq!(e.field, "variables.리뷰");
        assert!(e.message.contains("missing variable '리뷰'"), "{e}");
        let e = spec.render(&vars(&[("리뷰", "x"), ("extra", "y")])).unwrap_err();
        assert_eq!(e.field, "variables.extra");
    }

    #[test]
    fn variable_syntax_errors_are_reported() {
        assert_eq!(variables("a {{x}} b {{ y }} {{x}}").unwrap(), vec!["x", "y"]);
        assert!(variables("{{ bad name }}").is_err());
        assert!(variables("{{open").is_err());
        let spec = VersionSpec { input_pattern: "{{open".into(), ..VersionSpec::default() };
        assert_eq!(spec.validate().unwrap_err().field, "input_pattern");
    }

    #[test]
    fn validation_names_field_and_limit() {
        let mut spec = sentiment();
        spec.parameters.temperature = 3.0;
        let e = spec.validate().unwrap_err();
        assert_eq!(e.field, "parameters.temperature");
        assert!(e.message.contains("between 0 and 2"));
        let mut spec = sentiment();
        spec.examples[1].output = " ".into();
        assert_eq!(spec.validate().unwrap_err().field, "examples[1].output");
        assert!(validate_name("Movie Reviews").is_err());
        assert!(validate_name("movie-reviews_ko").is_ok());
    }

    #[test]
    fn content_hash_tracks_content() {
        let a = sentiment();
        let mut b = sentiment();
        assert_eq!(a.content_hash(), b.content_hash());
        b.parameters.max_tokens = 3;
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn diff_reports_text_examples_and_values() {
        let a = sentiment();
        let mut b = sentiment();
        b.instruction = "영화 리뷰의 감정을 긍정 또는 부정으로 분류하세요.".into();
        b.examples[1].output = "중립".into();
        b.examples.push(Example { input: "그냥 그랬다".into(), output: "중립".into() });
        b.parameters.temperature = 0.5;
        let d = diff(&a, &b);
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
        assert_eq!(diff(&a, &a)["unchanged"], true);
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
