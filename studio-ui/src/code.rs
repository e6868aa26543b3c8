//! "View code": ready-to-copy snippets that call the current template from a program.

use std::collections::BTreeMap;

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Curl,
    Python,
    JavaScript,
}

/// What the snippets call: a saved template (by name and version) or a raw prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeTarget {
    pub origin: String,
    /// The saved template and the reference a call names (`2`, `production`, `latest`; no
    /// reference: production, else the latest).
    pub template: Option<(String, Option<String>)>,
    pub variables: BTreeMap<String, String>,
    /// The exact prompt text (for `/v1/completions`).
    pub prompt: String,
    pub parameters: Value,
    pub model: String,
    /// A chat version: its endpoint is `/chat/completions`, answered in the chat shape.
    pub chat: bool,
}

fn json_pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A Python literal for any JSON value (True/False/None instead of true/false/null).
fn py(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap_or_default(), py(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl CodeTarget {
    fn template_path(&self) -> Option<String> {
        let (name, reference) = self.template.as_ref()?;
        let endpoint = if self.chat { "chat/completions" } else { "completions" };
        Some(match reference {
            Some(v) => format!("/v1/templates/{name}@{v}/{endpoint}"),
            None => format!("/v1/templates/{name}/{endpoint}"),
        })
    }

    fn template_body(&self) -> Value {
        if self.chat {
            // The conversation after the template's own turns (none on a first call).
            json!({ "variables": self.variables, "messages": [] })
        } else {
            json!({ "variables": self.variables })
        }
    }

    /// Where a template call's answer is, in JavaScript.
    fn template_answer(&self) -> &'static str {
        if self.chat {
            "data.choices[0].message.content"
        } else {
            "data.choices[0].text"
        }
    }

    fn completion_body(&self) -> Value {
        let mut body = json!({ "model": self.model, "prompt": self.prompt });
        if let (Value::Object(b), Value::Object(p)) = (&mut body, &self.parameters) {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        body
    }

    /// The snippet for one language: the template endpoint when saved, and the plain
    /// OpenAI-compatible completion with the rendered prompt.
    pub fn snippet(&self, lang: Lang) -> String {
        let o = &self.origin;
        let mut parts = Vec::new();
        match lang {
            Lang::Curl => {
                if let Some(path) = self.template_path() {
                    parts.push(format!(
                        "# The saved template: its prompt and parameters live on the server.\ncurl -s {o}{path} \\\n  -H \"Authorization: Bearer $STUDIO_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
                        shell_quote(&json_pretty(&self.template_body()))
                    ));
                }
                parts.push(format!(
                    "# Any OpenAI-compatible client: the exact prompt and parameters.\ncurl -s {o}/v1/completions \\\n  -H \"Authorization: Bearer $STUDIO_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
                    shell_quote(&json_pretty(&self.completion_body()))
                ));
            }
            Lang::Python => {
                let mut s = format!(
                    "# pip install openai\nimport os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"{o}/v1\", api_key=os.environ.get(\"STUDIO_API_KEY\", \"none\"))\n"
                );
                if let Some((name, reference)) = self.template.as_ref().filter(|_| self.chat) {
                    let at = reference.as_ref().map(|v| format!("@{v}")).unwrap_or_default();
                    s.push_str(&format!(
                        "\n# The saved chat template: the client posts to <base_url>/chat/completions; the template supplies the system prompt and example turns, `messages` continues the conversation.\ntemplate = OpenAI(base_url=\"{o}/v1/templates/{name}{at}\", api_key=client.api_key)\nresult = template.chat.completions.create(\n    model={}, messages=[], extra_body={},\n)\nprint(result.choices[0].message.content)\n",
                        py(&json!(self.model)),
                        py(&json!({ "variables": self.variables }))
                    ));
                } else if let Some((name, reference)) = &self.template {
                    let at = reference.as_ref().map(|v| format!("@{v}")).unwrap_or_default();
                    s.push_str(&format!(
                        "\n# The saved template: the client posts to <base_url>/completions; the template supplies the prompt.\ntemplate = OpenAI(base_url=\"{o}/v1/templates/{name}{at}\", api_key=client.api_key)\nresult = template.completions.create(\n    model={}, prompt=\"\", extra_body={},\n)\nprint(result.choices[0].text)\n",
                        py(&json!(self.model)),
                        py(&self.template_body())
                    ));
                }
                let body = self.completion_body();
                let args: Vec<String> = body
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "top_k" | "repetition_penalty"))
                            .map(|(k, v)| format!("    {k}={},", py(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let extra: serde_json::Map<String, Value> = body
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| matches!(k.as_str(), "top_k" | "repetition_penalty"))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let extra = if extra.is_empty() {
                    String::new()
                } else {
                    format!("    extra_body={},\n", py(&Value::Object(extra)))
                };
                s.push_str(&format!(
                    "\n# The exact prompt through the OpenAI-compatible endpoint.\ncompletion = client.completions.create(\n{}\n{extra})\nprint(completion.choices[0].text)\n",
                    args.join("\n")
                ));
                parts.push(s);
            }
            Lang::JavaScript => {
                // Plain functions, no top-level await: runs as a script in Node 18+ (fetch
                // built in) and pastes into any module.
                let headers =
                    "{ \"Content-Type\": \"application/json\", Authorization: `Bearer ${process.env.STUDIO_API_KEY}` }";
                let call = |what: &str, function: &str, url: String, body: &Value, answer: &str| {
                    format!(
                        "// {what}\nasync function {function}() {{\n  const res = await fetch(\"{url}\", {{\n    method: \"POST\",\n    headers: {headers},\n    body: JSON.stringify({}),\n  }});\n  const data = await res.json();\n  console.log({answer});\n}}",
                        json_pretty(body).replace('\n', "\n    ")
                    )
                };
                let mut calls = Vec::new();
                if let Some(path) = self.template_path() {
                    parts.push(call(
                        "The saved template.",
                        "callTemplate",
                        format!("{o}{path}"),
                        &self.template_body(),
                        self.template_answer(),
                    ));
                    calls.push("callTemplate");
                }
                parts.push(call(
                    "The exact prompt through the OpenAI-compatible endpoint.",
                    "callCompletion",
                    format!("{o}/v1/completions"),
                    &self.completion_body(),
                    "data.choices[0].text",
                ));
                calls.push("callCompletion");
                let chain: Vec<String> = calls.iter().map(|c| format!("then({c})")).collect();
                parts.push(format!("Promise.resolve().{}.catch(console.error);", chain.join(".")));
            }
        }
        parts.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CodeTarget {
        CodeTarget {
            origin: "http://127.0.0.1:8080".into(),
            template: Some(("movie-sentiment-ko".into(), Some("2".into()))),
            variables: [("리뷰".to_string(), "정말 최고의 영화's".to_string())].into_iter().collect(),
            prompt: "리뷰: 좋아요\n감정:".into(),
            parameters: json!({ "temperature": 0.0, "max_tokens": 4, "stop": ["\n"], "top_k": 0 }),
            model: "gemma3-270m".into(),
            chat: false,
        }
    }

    #[test]
    fn a_chat_version_is_called_at_its_chat_endpoint() {
        let mut t = target();
        t.chat = true;
        let curl = t.snippet(Lang::Curl);
        assert!(curl.contains("/v1/templates/movie-sentiment-ko@2/chat/completions"), "{curl}");
        assert!(curl.contains("\"messages\": []"), "{curl}");
        let py = t.snippet(Lang::Python);
        assert!(py.contains("template.chat.completions.create(") && py.contains("messages=[]"), "{py}");
        assert!(py.contains("result.choices[0].message.content"), "{py}");
        let js = t.snippet(Lang::JavaScript);
        assert!(
            js.contains("/chat/completions\"") && js.contains("console.log(data.choices[0].message.content)"),
            "{js}"
        );
        assert!(
            js.contains("console.log(data.choices[0].text)"),
            "the exact prompt still goes to /v1/completions: {js}"
        );
    }

    #[test]
    fn curl_quotes_korean_and_apostrophes_for_the_shell() {
        let s = target().snippet(Lang::Curl);
        assert!(s.contains("curl -s http://127.0.0.1:8080/v1/templates/movie-sentiment-ko@2/completions"), "{s}");
        assert!(!s.contains("curl http"), "every curl is silent: {s}");
        assert!(s.contains("최고의 영화'\\''s"), "{s}");
        assert!(s.contains("/v1/completions"));
    }

    #[test]
    fn python_uses_the_openai_client_with_python_literals() {
        let s = target().snippet(Lang::Python);
        assert!(s.contains("from openai import OpenAI"));
        assert!(s.contains("base_url=\"http://127.0.0.1:8080/v1/templates/movie-sentiment-ko@2\""), "{s}");
        assert!(s.contains("extra_body={\"variables\": {\"리뷰\": "), "{s}");
        assert!(s.contains("extra_body={\"top_k\": 0}"), "{s}");
        assert!(s.contains("stop=[\"\\n\"]"), "{s}");
        assert!(!s.contains("null") && !s.contains("true"));
    }

    #[test]
    fn an_unsaved_draft_gets_only_the_completion_call() {
        let mut t = target();
        t.template = None;
        let s = t.snippet(Lang::JavaScript);
        assert!(!s.contains("/v1/templates/"));
        assert!(s.contains("fetch(\"http://127.0.0.1:8080/v1/completions\""));
    }

    #[test]
    fn javascript_runs_as_a_script_and_names_each_response_once() {
        let s = target().snippet(Lang::JavaScript);
        let awaits: Vec<&str> = s.lines().filter(|l| l.contains("await ")).collect();
        assert_eq!(awaits.len(), 4, "{s}");
        assert!(awaits.iter().all(|l| l.starts_with("  ")), "an await outside a function: {s}");
        assert!(!s.contains("res2"), "{s}");
        assert!(s.contains("Promise.resolve().then(callTemplate).then(callCompletion)"), "{s}");
        assert!(s.contains("fetch(\"http://127.0.0.1:8080/v1/templates/movie-sentiment-ko@2/completions\""), "{s}");
    }

    #[test]
    fn a_template_call_can_follow_the_production_label() {
        let mut t = target();
        t.template = Some(("movie-sentiment-ko".into(), Some("production".into())));
        for lang in [Lang::Curl, Lang::JavaScript] {
            assert!(t.snippet(lang).contains("/v1/templates/movie-sentiment-ko@production/completions"));
        }
        assert!(t
            .snippet(Lang::Python)
            .contains("base_url=\"http://127.0.0.1:8080/v1/templates/movie-sentiment-ko@production\""));
    }
}
