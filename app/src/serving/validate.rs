//! Validation into a [`ValidRequest`]: the prompts tokenized and checked against the
//! context, the parameters against their limits, one engine request per choice, ready for
//! the batcher's queue. Every refusal names the field and its limit.

use std::sync::Arc;

use api_types::openai::{OutputControls, ResponseFormat, StructuredOutputs};
use api_types::{GenerationParams, PromptInput};
use inference::sampling::MAX_LOGIT_BIAS;
use inference::{ConstraintError, ConstraintSpec, GenerateRequest, Grammar, SamplingParams, Tokenizer};

use crate::serving::{Scheduler, ServeError};

/// Most choices per prompt (`n`).
pub const MAX_N: usize = 16;
/// Most prompts in one request (a list of strings or of token lists), checked before any
/// is tokenized. Prompts × n must also fit the server's `max_running` (see
/// [`Scheduler::check_group`]).
pub const MAX_PROMPTS: usize = 256;
/// Most stop sequences per request.
pub const MAX_STOPS: usize = 4;
/// `max_tokens` when a request gives none.
pub const DEFAULT_MAX_TOKENS: usize = 16;
/// Longest JSON schema (serialized) or grammar a request may carry, in bytes; what it
/// compiles to is bounded further by `inference::constraint::limits`.
pub const MAX_CONSTRAINT_BYTES: usize = 64 * 1024;
/// Longest regex, in bytes.
pub const MAX_REGEX_BYTES: usize = 4096;
/// Most strings in a choice, and the longest one in bytes.
pub const MAX_CHOICES: usize = 256;
pub const MAX_CHOICE_BYTES: usize = 1024;

/// A request that passed validation: every sequence to run.
#[derive(Debug)]
pub struct ValidRequest {
    /// One entry per choice: (prompt index, prompt text, request).
    pub choices: Vec<(usize, String, GenerateRequest)>,
    pub echo: bool,
    pub stream: bool,
    pub logprobs: bool,
}

/// What a request asks for besides its parameters.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    pub model: Option<String>,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stream: bool,
}

/// Refuses a model other than the one served.
pub fn check_model(sched: &Scheduler, model: &Option<String>) -> Result<(), ServeError> {
    match model {
        Some(m) if m != &sched.model_name => Err(ServeError::invalid(
            "model",
            format!("model '{m}' is not served here; available: {}", sched.model_name),
        )
        .with_code("model_not_found")),
        _ => Ok(()),
    }
}

/// Token ids from a client must exist in the vocabulary before anything decodes them.
pub fn check_token_ids(param: &str, ids: &[u32], tok: &Tokenizer) -> Result<(), ServeError> {
    let vocab = tok.vocab_size() as u32;
    match ids.iter().find(|&&t| t >= vocab) {
        Some(bad) => Err(ServeError::invalid(param, format!("token id {bad} is outside the vocabulary (0..{vocab})"))),
        None => Ok(()),
    }
}

impl ValidRequest {
    pub fn new(
        sched: &Scheduler,
        prompt: PromptInput,
        p: GenerationParams,
        opts: RequestOptions,
    ) -> Result<Self, ServeError> {
        check_model(sched, &opts.model)?;
        let tok = &sched.tokenizer;
        let ctx = sched.context_length;
        let internal = ServeError::internal;
        let count = match &prompt {
            PromptInput::Texts(ts) => ts.len(),
            PromptInput::TokenLists(l) => l.len(),
            PromptInput::Text(_) | PromptInput::Tokens(_) => 1,
        };
        if count > MAX_PROMPTS {
            return Err(ServeError::invalid("prompt", format!("prompt: at most {MAX_PROMPTS} prompts, got {count}")));
        }
        let n = p.n.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ServeError::invalid("n", format!("n must be between 1 and {MAX_N}, got {n}")));
        }
        let sequences = count * n;
        if sequences > sched.max_running {
            let param = if n > 1 { "n" } else { "prompt" };
            return Err(ServeError::invalid(
                param,
                format!(
                    "prompts × n = {count} × {n} = {sequences} sequences; at most {} run together on this server",
                    sched.max_running
                ),
            ));
        }
        let prompts: Vec<(String, Vec<u32>)> = match prompt {
            PromptInput::Text(t) => vec![(t.clone(), tok.encode(&t, true).map_err(internal)?)],
            PromptInput::Texts(ts) => ts
                .into_iter()
                .map(|t| Ok((t.clone(), tok.encode(&t, true).map_err(internal)?)))
                .collect::<Result<_, ServeError>>()?,
            PromptInput::Tokens(ids) => {
                check_token_ids("prompt", &ids, tok)?;
                vec![(tok.decode(&ids, false).map_err(internal)?, ids)]
            }
            PromptInput::TokenLists(l) => l
                .into_iter()
                .map(|ids| {
                    check_token_ids("prompt", &ids, tok)?;
                    Ok((tok.decode(&ids, false).map_err(internal)?, ids))
                })
                .collect::<Result<_, ServeError>>()?,
        };
        if prompts.is_empty() {
            return Err(ServeError::invalid("prompt", "prompt: at least one prompt is required"));
        }
        let stops = p.stop.map(api_types::StopInput::into_vec).unwrap_or_default();
        if stops.len() > MAX_STOPS {
            return Err(ServeError::invalid(
                "stop",
                format!("stop: at most {MAX_STOPS} sequences, got {}", stops.len()),
            ));
        }
        let max_tokens = p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let sampling = SamplingParams {
            temperature: p.temperature.unwrap_or(1.0),
            top_p: p.top_p.unwrap_or(1.0),
            top_k: p.top_k.unwrap_or(0),
            repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
            presence_penalty: p.presence_penalty.unwrap_or(0.0),
            frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
            seed: p.seed,
            logprobs: opts.logprobs,
            logit_bias: Vec::new(),
        };
        sampling.validate().map_err(inference::EngineError::from)?;
        let mut choices = Vec::new();
        for (i, (text, ids)) in prompts.into_iter().enumerate() {
            if ids.is_empty() || (ids.len() == 1 && Some(ids[0]) == tok.bos_id()) {
                return Err(ServeError::invalid("prompt", "prompt is empty: at least one token is needed"));
            }
            if ids.len() >= ctx {
                return Err(ServeError::invalid(
                    "prompt",
                    format!("prompt is {} tokens; the model's context is {ctx} tokens", ids.len()),
                )
                .with_code("context_length_exceeded"));
            }
            let room = ctx - ids.len();
            // `max_tokens: 0` with `echo` scores the prompt without generating.
            if (max_tokens == 0 && !opts.echo) || max_tokens > room {
                return Err(ServeError::invalid(
                    "max_tokens",
                    format!("max_tokens must be between 1 and {room} (context {ctx} minus {} prompt tokens; 0 only with echo, to score the prompt), got {max_tokens}", ids.len()),
                ));
            }
            if let Some(limit) = sched.kv_budget_tokens {
                let one = ids.len() + max_tokens;
                if one > limit {
                    return Err(ServeError::invalid(
                        "max_tokens",
                        format!(
                            "prompt plus max_tokens is {one} tokens; the KV cache budget allows {limit} per sequence"
                        ),
                    ));
                }
            }
            for k in 0..n {
                let mut s = sampling.clone();
                // n samples of one prompt must differ but stay reproducible.
                s.seed = sampling.seed.map(|seed| seed.wrapping_add(k as u64));
                let req = GenerateRequest {
                    prompt_tokens: ids.clone(),
                    max_tokens,
                    sampling: s,
                    stop: stops.clone(),
                    ignore_eos: false,
                    forced: Vec::new(),
                    constraint: None,
                    soft_prompt: None,
                };
                choices.push((i, text.clone(), req));
            }
        }
        if let Some(limit) = sched.kv_budget_tokens {
            let total: usize = choices.iter().map(|(_, _, r)| crate::serving::batcher::kv_reserve(r)).sum();
            if total > limit {
                return Err(ServeError::invalid(
                    "max_tokens",
                    format!(
                        "prompts × n need {total} KV positions (prompt plus max_tokens per sequence, run together); \
                         the KV cache budget of this server holds {limit}"
                    ),
                ));
            }
        }
        Ok(Self { choices, echo: opts.echo, stream: opts.stream, logprobs: opts.logprobs.is_some() })
    }
}

impl ValidRequest {
    /// Applies the output controls to every choice: the one constraint (compiled here, or
    /// found in the model's grammar cache; the caller runs this on the blocking pool) and
    /// `logit_bias`. Refuses `tools` where the model's chat template has no tool support.
    pub fn with_output(self, sched: &Scheduler, out: OutputControls) -> Result<Self, ServeError> {
        self.with_output_or(sched, out, None)
    }

    /// [`Self::with_output`], with `fallback` (a template version's constraint and the
    /// field its errors name) applied only when the request brings no constraint of its
    /// own: the call's constraint wins over the version's.
    pub fn with_output_or(
        mut self,
        sched: &Scheduler,
        out: OutputControls,
        fallback: Option<(&str, ConstraintSpec)>,
    ) -> Result<Self, ServeError> {
        check_tools(sched, &out)?;
        let bias = logit_bias(&out, &sched.tokenizer)?;
        let chosen = constraint_of(out)?.or_else(|| fallback.map(|(param, spec)| (param.to_string(), spec)));
        let grammar = match chosen {
            Some((param, spec)) => Some(compile_constraint(sched, &param, &spec)?),
            None => None,
        };
        for (_, _, req) in &mut self.choices {
            req.constraint = grammar.clone();
            req.sampling.logit_bias = bias.clone();
            req.sampling.validate().map_err(inference::EngineError::from)?;
        }
        Ok(self)
    }
}

/// Compiles `spec` for the served model (or finds it in the grammar cache); a refusal is a
/// 400 naming `param`. CPU work: call it on the blocking pool.
pub fn compile_constraint(sched: &Scheduler, param: &str, spec: &ConstraintSpec) -> Result<Arc<Grammar>, ServeError> {
    sched.constraints.compile(spec).map_err(|e| constraint_error(param, e))
}

fn constraint_error(param: &str, e: ConstraintError) -> ServeError {
    match e {
        ConstraintError::Invalid { kind, reason } => {
            ServeError::invalid(param, format!("{param}: invalid {kind}: {reason}"))
        }
        ConstraintError::Empty { kind } => ServeError::invalid(param, format!("{param}: the {kind} matches no text")),
        other => ServeError::invalid(param, format!("{param}: {other}")),
    }
}

fn check_tools(sched: &Scheduler, out: &OutputControls) -> Result<(), ServeError> {
    let wants_tools = out.tools.as_ref().is_some_and(|t| !t.is_empty());
    let tool_choice = out.tool_choice.as_ref().is_some_and(|c| !c.is_null() && c.as_str() != Some("none"));
    if !wants_tools && !tool_choice {
        return Ok(());
    }
    if sched.tokenizer.chat_template().is_some_and(|t| t.contains("tools")) {
        return Ok(());
    }
    let param = if wants_tools { "tools" } else { "tool_choice" };
    Err(ServeError::invalid(
        param,
        format!(
            "{param}: model '{}' cannot call tools: this model's chat template has no tool support",
            sched.model_name
        ),
    ))
}

fn logit_bias(out: &OutputControls, tok: &Tokenizer) -> Result<Vec<(u32, f32)>, ServeError> {
    let Some(map) = &out.logit_bias else { return Ok(Vec::new()) };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ServeError::invalid(
            "logit_bias",
            format!("logit_bias: at most {MAX_LOGIT_BIAS} entries, got {}", map.len()),
        ));
    }
    let vocab = tok.vocab_size();
    map.iter()
        .map(|(key, &bias)| {
            let id: u32 = key
                .parse()
                .map_err(|_| ServeError::invalid("logit_bias", format!("logit_bias: key {key:?} is not a token id")))?;
            if id as usize >= vocab {
                return Err(ServeError::invalid(
                    "logit_bias",
                    format!("logit_bias: token id {id} is outside the vocabulary (0..{vocab})"),
                ));
            }
            if !(-100.0..=100.0).contains(&bias) {
                return Err(ServeError::invalid(
                    "logit_bias",
                    format!("logit_bias: bias must be in [-100, 100], got {bias} for token {id}"),
                ));
            }
            Ok((id, bias))
        })
        .collect()
}

/// A JSON schema given as an object or as a string holding one (vLLM takes both).
fn schema(param: &str, v: serde_json::Value) -> Result<ConstraintSpec, ServeError> {
    let v = match v {
        serde_json::Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| ServeError::invalid(param, format!("{param}: not a JSON schema: {e}")))?,
        v => v,
    };
    let size = v.to_string().len();
    if size > MAX_CONSTRAINT_BYTES {
        return Err(ServeError::invalid(
            param,
            format!("{param}: at most {MAX_CONSTRAINT_BYTES} bytes of schema, got {size}"),
        ));
    }
    Ok(ConstraintSpec::JsonSchema(v))
}

fn too_long(param: &str, text: &str, limit: usize) -> Result<(), ServeError> {
    if text.len() > limit {
        return Err(ServeError::invalid(param, format!("{param}: at most {limit} bytes, got {}", text.len())));
    }
    Ok(())
}

fn regex_spec(param: &str, regex: String) -> Result<ConstraintSpec, ServeError> {
    too_long(param, &regex, MAX_REGEX_BYTES)?;
    Ok(ConstraintSpec::Regex(regex))
}

fn grammar_spec(param: &str, grammar: String) -> Result<ConstraintSpec, ServeError> {
    too_long(param, &grammar, MAX_CONSTRAINT_BYTES)?;
    Ok(ConstraintSpec::Grammar(grammar))
}

fn choice_spec(param: &str, choices: Vec<String>) -> Result<ConstraintSpec, ServeError> {
    if choices.is_empty() || choices.len() > MAX_CHOICES {
        return Err(ServeError::invalid(
            param,
            format!("{param}: between 1 and {MAX_CHOICES} choices, got {}", choices.len()),
        ));
    }
    if let Some(bad) = choices.iter().find(|c| c.is_empty() || c.len() > MAX_CHOICE_BYTES) {
        return Err(ServeError::invalid(
            param,
            format!("{param}: every choice must be 1 to {MAX_CHOICE_BYTES} bytes, got {} bytes", bad.len()),
        ));
    }
    Ok(ConstraintSpec::Choice(choices))
}

/// The request's one output constraint and the field that gave it.
fn constraint_of(out: OutputControls) -> Result<Option<(String, ConstraintSpec)>, ServeError> {
    let mut found: Vec<(String, ConstraintSpec)> = Vec::new();
    match out.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => found.push(("response_format".into(), ConstraintSpec::JsonObject)),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let param = "response_format.json_schema.schema";
            let Some(s) = json_schema.schema else {
                return Err(ServeError::invalid(param, format!("{param} is required")));
            };
            found.push((param.into(), schema(param, s)?));
        }
    }
    let so = out.structured_outputs.unwrap_or_default();
    let StructuredOutputs { json, regex, choice, grammar, json_object } = so;
    let json_object = json_object.filter(|&b| b).map(|_| Ok(ConstraintSpec::JsonObject));
    let fields = [
        ("structured_outputs.json", json.map(|v| schema("structured_outputs.json", v))),
        ("guided_json", out.guided_json.map(|v| schema("guided_json", v))),
        ("structured_outputs.regex", regex.map(|r| regex_spec("structured_outputs.regex", r))),
        ("guided_regex", out.guided_regex.map(|r| regex_spec("guided_regex", r))),
        ("structured_outputs.choice", choice.map(|c| choice_spec("structured_outputs.choice", c))),
        ("guided_choice", out.guided_choice.map(|c| choice_spec("guided_choice", c))),
        ("structured_outputs.grammar", grammar.map(|g| grammar_spec("structured_outputs.grammar", g))),
        ("guided_grammar", out.guided_grammar.map(|g| grammar_spec("guided_grammar", g))),
        ("structured_outputs.json_object", json_object),
    ];
    for (param, spec) in fields {
        if let Some(spec) = spec {
            found.push((param.into(), spec?));
        }
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        return Err(ServeError::invalid(
            &found[1].0,
            format!("at most one output constraint per request, got {}", names.join(" and ")),
        ));
    }
    Ok(found.pop())
}

#[cfg(test)]
mod output_tests {
    use super::*;

    fn controls(v: serde_json::Value) -> OutputControls {
        serde_json::from_value(v).unwrap()
    }

    fn param_of(e: ServeError) -> String {
        match e {
            ServeError::Invalid { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_constraint_from_any_of_the_fields() {
        let cases = [
            (serde_json::json!({"response_format": {"type": "json_object"}}), "response_format", "json_object"),
            (serde_json::json!({"guided_json": "{\"type\": \"object\"}"}), "guided_json", "json"),
            (serde_json::json!({"structured_outputs": {"regex": "a+"}}), "structured_outputs.regex", "regex"),
            (serde_json::json!({"guided_choice": ["x"]}), "guided_choice", "choice"),
            (
                serde_json::json!({"structured_outputs": {"grammar": "start: \"a\""}}),
                "structured_outputs.grammar",
                "grammar",
            ),
        ];
        for (v, param, kind) in cases {
            let (p, spec) = constraint_of(controls(v)).unwrap().unwrap();
            assert_eq!((p.as_str(), spec.kind()), (param, kind));
        }
        assert!(constraint_of(controls(serde_json::json!({"response_format": {"type": "text"}}))).unwrap().is_none());
        let two = controls(serde_json::json!({"guided_regex": "a", "structured_outputs": {"choice": ["a"]}}));
        assert_eq!(param_of(constraint_of(two).unwrap_err()), "structured_outputs.choice");
        let long = controls(serde_json::json!({"guided_regex": "a".repeat(MAX_REGEX_BYTES + 1)}));
        assert_eq!(param_of(constraint_of(long).unwrap_err()), "guided_regex");
    }
}
