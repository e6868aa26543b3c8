//! Validation into a [`ValidRequest`]: the prompts tokenized and checked against the
//! context, the parameters against their limits, one engine request per choice, ready for
//! the batcher's queue. Every refusal names the field and its limit.

use api_types::{GenerationParams, PromptInput};
use inference::{GenerateRequest, SamplingParams, Tokenizer};

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
