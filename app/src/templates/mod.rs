//! Prompt templates: what a version holds, how it is validated, rendered into the exact
//! prompt the model sees, diffed against another version, read from / written to the
//! `prompts/` TOML file format, and the shipped library.

mod diff;
mod file;
pub mod library;
pub mod output;
mod spec;

pub use diff::*;
pub use file::*;
pub use spec::*;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
    fn chat_mode_is_content_kept_by_files_and_shown_by_the_diff() {
        let plain = sentiment();
        assert!(!serde_json::to_string(&plain).unwrap().contains("mode"), "completion is left out: old hashes hold");
        let chat = VersionSpec { mode: PromptMode::Chat, ..sentiment() };
        assert_ne!(chat.content_hash(), plain.content_hash());
        let d = serde_json::to_value(diff(&plain, &chat)).unwrap();
        assert_eq!(d["values"][0]["field"], "mode");
        assert_eq!(
            (d["values"][0]["old"].as_str(), d["values"][0]["new"].as_str()),
            (Some("completion"), Some("chat"))
        );
        let meta = TemplateMeta { name: "chat-ko".into(), ..Default::default() };
        let toml = TemplateFile::from_parts(&meta, &chat, "").to_toml();
        assert!(toml.contains("mode = \"chat\""), "{toml}");
        let back = TemplateFile::parse(&toml).unwrap().spec();
        assert_eq!(back.content_hash(), chat.content_hash());
        // Chat turns: the system prompt, a user and an assistant turn per example, the input.
        let vars = [("리뷰".to_string(), "최고".to_string())].into_iter().collect();
        let turns = chat.chat_turns(&vars).unwrap();
        let roles: Vec<String> = turns.all().into_iter().map(|m| m.role).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant", "user"]);
        assert_eq!(turns.input.content, "최고");
        assert!(chat.render(&vars).is_err(), "a chat version needs the model's chat template");
        assert_eq!(chat.chat_turns(&Default::default()).unwrap_err().field, "variables.리뷰");
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
        let mut c = sentiment();
        c.output = Some(OutputConstraint::Choice { labels: vec!["긍정".into(), "부정".into()] });
        let d = serde_json::to_value(diff(&a, &c)).unwrap();
        assert_eq!(d["values"][0]["field"], "output");
        assert_eq!(d["values"][0]["old"], Value::Null);
        assert_eq!(d["values"][0]["new"]["labels"][1], "부정");
        assert!(d.get("from").is_none(), "the handler adds which versions were compared");
    }

    /// Both sides of a text diff rebuilt from its ops.
    fn sides(ops: &[api_types::templates::TextOp]) -> (String, String) {
        use api_types::templates::Op;
        let pick = |skip: Op| ops.iter().filter(|o| o.op != skip).map(|o| o.text.as_str()).collect::<String>();
        (pick(Op::Insert), pick(Op::Delete))
    }

    #[test]
    fn diff_of_long_fields_is_by_line_and_bounded_in_time() {
        use api_types::templates::DiffGranularity;
        let line = |i: usize| format!("Rule {i}: answer with one word, lower case, no punctuation at all.\n");
        let mut a = sentiment();
        a.instruction = (0..280).map(line).collect();
        assert!(a.instruction.chars().count() * 2 > CHAR_DIFF_MAX_CHARS && a.instruction.len() <= 20_000);
        let mut b = a.clone();
        b.instruction = a.instruction.replace("Rule 17:", "Rule seventeen:").replace("Rule 200:", "Rule 2000:");
        let d = diff(&a, &b);
        let t = &d.text[0];
        assert_eq!(t.granularity, DiffGranularity::Line);
        assert_eq!(sides(&t.ops), (a.instruction.clone(), b.instruction.clone()));
        let deleted: Vec<&str> =
            t.ops.iter().filter(|o| o.op == api_types::templates::Op::Delete).map(|o| o.text.as_str()).collect();
        assert_eq!(deleted, [line(17), line(200)], "whole lines, only the changed ones");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["text"][0]["granularity"], "line");

        // Short fields are diffed by word.
        let mut c = sentiment();
        c.instruction.push('!');
        let short = diff(&sentiment(), &c);
        assert_eq!(short.text[0].granularity, DiffGranularity::Word);
        assert_eq!(serde_json::to_value(&short).unwrap()["text"][0]["granularity"], "word");

        // Out of search time, a word diff is coarser but still rebuilds both texts.
        let mut e = sentiment();
        let mut f = sentiment();
        e.instruction = (0..3000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        f.instruction = (0..3000).map(|i| char::from(b'a' + (i * 11 % 26) as u8)).collect();
        let rushed = diff_within(&e, &f, std::time::Duration::ZERO);
        assert_eq!(rushed.text[0].granularity, DiffGranularity::Word);
        assert_eq!(sides(&rushed.text[0].ops), (e.instruction, f.instruction));
    }

    /// The deleted and inserted runs of a diff of two instructions.
    fn changed_runs(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
        use api_types::templates::Op;
        let (mut a, mut b) = (sentiment(), sentiment());
        a.instruction = old.into();
        b.instruction = new.into();
        let d = diff(&a, &b);
        assert_eq!(sides(&d.text[0].ops), (old.to_string(), new.to_string()));
        let runs = |op: Op| d.text[0].ops.iter().filter(|o| o.op == op).map(|o| o.text.clone()).collect();
        (runs(Op::Delete), runs(Op::Insert))
    }

    #[test]
    fn korean_words_change_whole_and_japanese_by_grapheme() {
        // A changed Korean word is shown as the old word and the new one, never as
        // interleaved syllables ("훌륭지루했다").
        let (del, ins) = changed_runs("연기가 훌륭했다 정말로", "연기가 지루했다 정말로");
        assert_eq!((del, ins), (vec!["훌륭했다".to_string()], vec!["지루했다".to_string()]));
        let (del, ins) = changed_runs("긍정 또는 부정", "부정 또는 긍정");
        // Swapped words: whichever anchor the diff picks, every changed run is made of whole
        // words of the texts.
        let words = ["긍정", "또는", "부정"];
        assert!(del.iter().chain(&ins).all(|r| r.split_whitespace().all(|w| words.contains(&w))), "{del:?} {ins:?}");
        // Japanese has no spaces: one changed character is one changed grapheme.
        let (del, ins) = changed_runs("この映画は最高でした。", "この映画は最悪でした。");
        assert_eq!((del, ins), (vec!["高".to_string()], vec!["悪".to_string()]));
        // Latin words too; an emoji with a joiner stays one cluster.
        let (del, ins) = changed_runs("Answer in one word 👩‍💻.", "Answer in two words 👨‍💻.");
        assert_eq!(del, ["one", "word", "👩‍💻"]);
        assert_eq!(ins, ["two", "words", "👨‍💻"]);
        for text in ["", " a  b ", "감정: 긍정\n", "日本語の文、English words and 한국어 단어!", "e\u{301}t\u{e9}"]
        {
            assert_eq!(diff_tokens(text).concat(), text);
        }
        assert_eq!(diff_tokens("리뷰: 좋다"), ["리뷰", ":", " ", "좋다"]);
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
