//! Token sampling: penalties, temperature, top-k / top-p (nucleus) filtering and logprobs.
//!
//! Everything works on one sequence's logits row as a plain `&[f32]`, so the
//! engine can pull a row out of a tensor with `to_vec1::<f32>()` and hand it over.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::simd::{self, exp_shifted, exp_shifted_in_place};

/// Largest accepted `top_k`; far above any real vocabulary, it only rejects nonsense.
pub const MAX_TOP_K: usize = 1_000_000;
/// Most top alternatives reported per token (the OpenAI API's limit).
pub const MAX_LOGPROBS: usize = 20;
/// Most `logit_bias` entries (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;

/// Per-request sampling settings, with OpenAI-compatible names and defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling mass; 1.0 disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: usize,
    /// CTRL-style penalty for tokens seen in prompt or output; 1.0 disables it.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// RNG seed; `None` draws one from entropy (see [`Sampler::seed`]).
    pub seed: Option<u64>,
    /// Number of top alternatives to report per token; `None` reports none.
    pub logprobs: Option<usize>,
    /// OpenAI's `logit_bias`: `(token id, bias)` pairs, each bias in [-100, 100] added to
    /// that token's logit before the draw (-100 bans it, 100 all but forces it); at most
    /// [`MAX_LOGIT_BIAS`]. Reported logprobs stay those of the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logprobs: None,
            logit_bias: Vec::new(),
        }
    }
}

/// A sampling parameter outside its accepted range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("{field} must be {limit}, got {value}")]
    OutOfRange { field: &'static str, limit: &'static str, value: String },
}

fn check(ok: bool, field: &'static str, limit: &'static str, value: impl ToString) -> Result<(), SamplingError> {
    if ok {
        Ok(())
    } else {
        Err(SamplingError::OutOfRange { field, limit, value: value.to_string() })
    }
}

impl SamplingParams {
    /// Checks every field against its range. The `contains` checks are written so
    /// that NaN fails them too.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        check((0.0..=2.0).contains(&t), "temperature", "in [0, 2]", t)?;
        let p = self.top_p;
        check(p > 0.0 && p <= 1.0, "top_p", "in (0, 1]", p)?;
        check(self.top_k <= MAX_TOP_K, "top_k", "at most 1000000 (0 = off)", self.top_k)?;
        let r = self.repetition_penalty;
        check(r > 0.0 && r <= 10.0, "repetition_penalty", "in (0, 10]", r)?;
        let pp = self.presence_penalty;
        check((-2.0..=2.0).contains(&pp), "presence_penalty", "in [-2, 2]", pp)?;
        let fp = self.frequency_penalty;
        check((-2.0..=2.0).contains(&fp), "frequency_penalty", "in [-2, 2]", fp)?;
        if let Some(n) = self.logprobs {
            check(n <= MAX_LOGPROBS, "logprobs", "at most 20", n)?;
        }
        let n = self.logit_bias.len();
        check(n <= MAX_LOGIT_BIAS, "logit_bias", "at most 300 entries", n)?;
        for &(id, bias) in &self.logit_bias {
            check(
                (-100.0..=100.0).contains(&bias),
                "logit_bias",
                "in [-100, 100] for every token",
                format!("{bias} for token {id}"),
            )?;
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// One drawn token with its logprob under the raw model distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampledToken {
    pub id: u32,
    /// Log-probability of `id` from the log-softmax of the raw logits.
    pub logprob: f32,
    /// Top alternatives `(id, logprob)`, most likely first; empty unless requested.
    pub top: Vec<(u32, f32)>,
}

/// Index of the largest logit; ties go to the lowest id, NaN never wins.
///
/// Panics on an empty slice: there is no token to return.
pub fn argmax(logits: &[f32]) -> u32 {
    assert!(!logits.is_empty(), "argmax of empty logits");
    // The largest non-NaN value in eight lanes (a compare and a select per element, which
    // vectorizes), then its first position: a few microseconds for a 49k row, where the
    // one-pass scan below, a dependent load and compare per element, took ~150.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max > f32::NEG_INFINITY {
        return logits.iter().position(|&x| x == max).expect("the maximum is in the row") as u32;
    }
    // Only -inf and NaN: the scan's own rule.
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        // Strict `>` keeps the first of equal maxima; NaN compares false.
        if x > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// `log(sum(exp(x)))` computed stably, i.e. shifted by the maximum.
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    // f64 accumulation: 262k small terms would lose precision in f32. libm's `expf` one
    // element at a time was most of a sampled token's cost (a 49k vocabulary, every token
    // of every sequence), so the terms come eight at a time.
    let mut acc = [0f64; 8];
    let n8 = logits.len() / 8 * 8;
    simd::exp_sums(&logits[..n8], max, &mut acc);
    let tail: f64 = logits[n8..].iter().map(|&x| f64::from(exp_shifted(x - max))).sum();
    let sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
    max + sum.ln() as f32
}

/// Log-softmax of a logits row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    if lse == f32::NEG_INFINITY {
        // Every token is masked out: no distribution exists, report all as impossible.
        return vec![f32::NEG_INFINITY; logits.len()];
    }
    logits.iter().map(|&x| x - lse).collect()
}

/// Orders `(id, score)` pairs best first, ties by lowest id: a total order,
/// so partial selection picks the same set whatever the algorithm does.
fn best_first(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the `n` best pairs, sorted best first, without sorting everything.
fn top_n(mut pairs: Vec<(u32, f32)>, n: usize) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    if n < pairs.len() {
        pairs.select_nth_unstable_by(n - 1, best_first);
        pairs.truncate(n);
    }
    pairs.sort_unstable_by(best_first);
    pairs
}

/// Draws tokens for one sequence and remembers what it generated for the penalties.
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: StdRng,
    /// Tokens of prompt and output, for the repetition penalty.
    seen: HashSet<u32>,
    /// How often each token was generated, for presence/frequency penalties.
    output_counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt_tokens: &[u32]) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        Self {
            seen: prompt_tokens.iter().copied().collect(),
            output_counts: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            params,
        }
    }

    /// The seed actually in use, so a run with an entropy seed can be replayed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Applies penalties, temperature, top-k, top-p; draws a token; records it as
    /// generated (for penalties).
    ///
    /// Panics on an empty logits row.
    pub fn sample(&mut self, logits: &[f32]) -> SampledToken {
        self.sample_with(logits, logits)
    }

    /// [`Self::sample`] drawing from `scores` (the logits with a constraint's mask applied:
    /// -inf where a token may not come) while the logprobs come from the raw `logits`.
    ///
    /// Panics on an empty logits row or rows of different lengths.
    pub fn sample_with(&mut self, logits: &[f32], scores: &[f32]) -> SampledToken {
        assert!(!logits.is_empty(), "sample from empty logits");
        assert_eq!(logits.len(), scores.len(), "a score per logit");
        let p = &self.params;
        let penalised = p.repetition_penalty != 1.0
            || p.presence_penalty != 0.0
            || p.frequency_penalty != 0.0
            || !p.logit_bias.is_empty();
        let owned;
        let scores = if penalised {
            let mut s = scores.to_vec();
            self.apply_penalties(&mut s);
            owned = s;
            &owned[..]
        } else {
            scores
        };

        let id = if self.params.is_greedy() { argmax(scores) } else { self.draw(scores) };

        let token = self.logprobs(logits, id);
        self.seen.insert(id);
        *self.output_counts.entry(id).or_default() += 1;
        token
    }

    fn apply_penalties(&self, scores: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &id in &self.seen {
                // Ids beyond the logits row (e.g. added tokens) have nothing to penalise.
                if let Some(s) = scores.get_mut(id as usize) {
                    // Dividing a negative logit would raise it, hence the two cases.
                    *s = if *s > 0.0 { *s / p.repetition_penalty } else { *s * p.repetition_penalty };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &count) in &self.output_counts {
                if let Some(s) = scores.get_mut(id as usize) {
                    *s -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
        for &(id, bias) in &p.logit_bias {
            if let Some(s) = scores.get_mut(id as usize) {
                *s += bias;
            }
        }
    }

    /// Temperature, top-k, top-p, then one draw from what is left.
    fn draw(&mut self, scores: &[f32]) -> u32 {
        let inv_t = 1.0 / self.params.temperature;
        if self.params.top_k == 0 && self.params.top_p >= 1.0 {
            return self.draw_from_all(scores, inv_t);
        }
        // Masked (-inf) and NaN logits can never be drawn; dropping them early
        // keeps them out of the softmax.
        let mut cands: Vec<(u32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > f32::NEG_INFINITY)
            .map(|(i, &s)| (i as u32, s * inv_t))
            .collect();
        if cands.is_empty() {
            return argmax(scores);
        }

        let k = self.params.top_k;
        if k > 0 && k < cands.len() {
            cands.select_nth_unstable_by(k - 1, best_first);
            cands.truncate(k);
        }

        // Softmax in place: the score becomes an (unnormalised) probability.
        let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for c in &mut cands {
            c.1 = exp_shifted(c.1 - max);
            total += f64::from(c.1);
        }

        if self.params.top_p < 1.0 {
            total = nucleus(&mut cands, total, f64::from(self.params.top_p));
        }

        let r = self.rng.random::<f64>() * total;
        let mut cum = 0.0f64;
        for &(id, p) in &cands {
            cum += f64::from(p);
            if r < cum {
                return id;
            }
        }
        // Rounding left `r` just past the end: take the last token that had mass.
        cands.iter().rev().find(|c| c.1 > 0.0).map_or(cands[0].0, |c| c.0)
    }

    /// [`Self::draw`] with neither top-k nor top-p (the usual case): the same draw over
    /// the whole row, without a candidate list, its exponentials eight at a time.
    fn draw_from_all(&mut self, scores: &[f32], inv_t: f32) -> u32 {
        let mut p: Vec<f32> = scores.iter().map(|s| s * inv_t).collect();
        // Masked (-inf) and NaN scores have no mass.
        let max = p.iter().copied().filter(|s| *s > f32::NEG_INFINITY).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return argmax(scores);
        }
        exp_shifted_in_place(&mut p, max);
        for v in p.iter_mut().filter(|v| v.is_nan()) {
            *v = 0.0;
        }
        let total: f64 = p.iter().map(|&v| f64::from(v)).sum();
        let r = self.rng.random::<f64>() * total;
        let mut cum = 0.0f64;
        for (id, &v) in p.iter().enumerate() {
            cum += f64::from(v);
            if r < cum {
                return id as u32;
            }
        }
        // Rounding left `r` just past the end: take the last token that had mass.
        p.iter().rposition(|&v| v > 0.0).unwrap_or(0) as u32
    }

    /// `id` as if it had been drawn from `logits`, drawing nothing: its logprob under the raw
    /// distribution (and the top alternatives when asked for). Scores forced tokens.
    pub fn score(&self, logits: &[f32], id: u32) -> SampledToken {
        self.logprobs(logits, id)
    }

    fn logprobs(&self, logits: &[f32], id: u32) -> SampledToken {
        let lse = log_sum_exp(logits);
        let logprob = logits[id as usize] - lse;
        let top = match self.params.logprobs {
            Some(n) => {
                // Log-softmax preserves order, so the top raw logits are the top logprobs.
                let pairs = logits.iter().enumerate().map(|(i, &x)| (i as u32, x));
                top_n(pairs.collect(), n).into_iter().map(|(i, x)| (i, x - lse)).collect()
            }
            None => Vec::new(),
        };
        SampledToken { id, logprob, top }
    }
}

/// Shrinks `cands` (unnormalised probabilities summing to `total`) to the smallest
/// best-first prefix holding `top_p` of the mass, and returns the kept mass.
///
/// The nucleus is usually a handful of tokens, so rather than sorting the whole
/// vocabulary this sorts a growing head of it until the mass is reached; each round
/// only selects and sorts the next slice, as everything before it is already final.
fn nucleus(cands: &mut Vec<(u32, f32)>, total: f64, top_p: f64) -> f64 {
    let target = top_p * total;
    let mut sorted = 0;
    let mut head = cands.len().min(64);
    let mut cum = 0.0f64;
    loop {
        let rest = &mut cands[sorted..];
        let take = head - sorted;
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, best_first);
        }
        rest[..take].sort_unstable_by(best_first);
        for i in sorted..head {
            cum += f64::from(cands[i].1);
            if cum >= target {
                cands.truncate(i + 1);
                return cum;
            }
        }
        if head == cands.len() {
            // Rounding kept the sum just below the target: everything stays.
            return cum;
        }
        sorted = head;
        head = (head * 4).min(cands.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, irregular logits (no RNG so the fixture never changes).
    fn fixture_logits(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) * 6.0 - 3.0).collect()
    }

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        f(&mut p);
        p
    }

    fn draws(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p.clone(), &[]);
        (0..n).map(|_| s.sample(logits).id).collect()
    }

    #[test]
    fn drawing_from_the_whole_row_equals_the_candidate_list() {
        // top_k = vocabulary size keeps every candidate: the general path, same draws.
        let mut logits = fixture_logits(1003);
        logits[5] = f32::NEG_INFINITY;
        logits[700] = f32::NAN;
        for temperature in [0.7, 1.0, 1.6] {
            let all = params(|p| {
                p.seed = Some(9);
                p.temperature = temperature;
            });
            let listed = SamplingParams { top_k: logits.len(), ..all.clone() };
            let got = draws(&all, &logits, 300);
            assert_eq!(got, draws(&listed, &logits, 300), "t={temperature}");
            assert!(got.iter().all(|&id| id != 5 && id != 700));
            assert!(got.iter().collect::<std::collections::HashSet<_>>().len() > 20);
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits = fixture_logits(1000);
        let p = params(|p| {
            p.seed = Some(42);
            p.top_p = 0.95;
            p.top_k = 200;
        });
        assert_eq!(draws(&p, &logits, 50), draws(&p, &logits, 50));
    }

    #[test]
    fn different_seeds_differ() {
        let logits = fixture_logits(1000);
        let a = draws(&params(|p| p.seed = Some(1)), &logits, 50);
        let b = draws(&params(|p| p.seed = Some(2)), &logits, 50);
        assert_ne!(a, b);
    }

    #[test]
    fn entropy_seed_is_recorded_and_replays() {
        let logits = fixture_logits(500);
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        let first: Vec<u32> = (0..20).map(|_| s.sample(&logits).id).collect();
        let replay = draws(&params(|p| p.seed = Some(s.seed())), &logits, 20);
        assert_eq!(first, replay);
    }

    #[test]
    fn greedy_picks_argmax_lowest_id_on_ties() {
        let logits = [0.1, 3.0, -1.0, 3.0, 2.9];
        assert_eq!(argmax(&logits), 1);
        let p = params(|p| p.temperature = 0.0);
        assert_eq!(draws(&p, &logits, 5), vec![1; 5]);
    }

    #[test]
    fn argmax_ignores_nan() {
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 2);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima_among_nans_and_infinities() {
        let scan = |x: &[f32]| {
            let mut best = 0;
            for (i, &v) in x.iter().enumerate() {
                if v > x[best] || x[best].is_nan() {
                    best = i;
                }
            }
            best as u32
        };
        for n in [1, 7, 8, 9, 100, 1003] {
            for seed in 0..20u32 {
                // Few distinct values: many ties; some NaN and -inf.
                let row: Vec<f32> = (0..n as u32)
                    .map(|i| match (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 13 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => (v % 5) as f32 - 2.0,
                    })
                    .collect();
                assert_eq!(argmax(&row), scan(&row), "n={n} seed={seed}");
            }
        }
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_equal_greedy() {
        let logits = fixture_logits(5000);
        let best = argmax(&logits);
        let k1 = params(|p| {
            p.top_k = 1;
            p.seed = Some(3);
        });
        let tiny_p = params(|p| {
            p.top_p = 1e-6;
            p.seed = Some(3);
        });
        assert_eq!(draws(&k1, &logits, 30), vec![best; 30]);
        assert_eq!(draws(&tiny_p, &logits, 30), vec![best; 30]);
    }

    #[test]
    fn top_k_restricts_to_k_best() {
        let logits = fixture_logits(2000);
        let allowed: HashSet<u32> = top_n(logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect(), 5)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let p = params(|p| {
            p.top_k = 5;
            p.temperature = 2.0;
            p.seed = Some(9);
        });
        let got: HashSet<u32> = draws(&p, &logits, 300).into_iter().collect();
        assert!(got.is_subset(&allowed), "{got:?} not within {allowed:?}");
        assert!(got.len() > 1, "temperature 2 over 5 tokens should vary");
    }

    #[test]
    fn top_p_keeps_smallest_nucleus() {
        // Probabilities 0.5, 0.3, 0.2: top_p 0.7 needs the first two tokens.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let p = params(|p| {
            p.top_p = 0.7;
            p.seed = Some(5);
        });
        let got = draws(&p, &logits, 2000);
        assert!(!got.contains(&2));
        let share0 = got.iter().filter(|&&t| t == 0).count() as f64 / 2000.0;
        assert!((share0 - 0.625).abs() < 0.04, "share of token 0: {share0}");
    }

    #[test]
    fn nucleus_grows_past_first_head() {
        // A flat distribution over 1000 tokens: 0.9 of the mass needs 900 of them.
        let mut cands: Vec<(u32, f32)> = (0..1000).map(|i| (i, 1.0)).collect();
        let kept = nucleus(&mut cands, 1000.0, 0.9);
        assert_eq!(cands.len(), 900);
        assert!((kept - 900.0).abs() < 1e-6);
    }

    #[test]
    fn nucleus_matches_full_sort() {
        let probs: Vec<(u32, f32)> =
            fixture_logits(5000).iter().enumerate().map(|(i, &x)| (i as u32, x.exp())).collect();
        let total: f64 = probs.iter().map(|c| f64::from(c.1)).sum();
        for top_p in [0.01, 0.3, 0.8, 0.99] {
            let mut sorted = probs.clone();
            sorted.sort_by(best_first);
            let mut cum = 0.0;
            let n = sorted
                .iter()
                .position(|c| {
                    cum += f64::from(c.1);
                    cum >= top_p * total
                })
                .map_or(sorted.len(), |i| i + 1);
            let mut cands = probs.clone();
            nucleus(&mut cands, total, top_p);
            assert_eq!(cands, sorted[..n], "top_p {top_p}");
        }
    }

    #[test]
    fn temperature_sharpens_distribution() {
        // p = (1/3, 2/3) at temperature 1; at 0.5 the ratio squares: (1/5, 4/5).
        let logits = [0.0, 2f32.ln()];
        let p = params(|p| {
            p.temperature = 0.5;
            p.seed = Some(11);
        });
        let n = 2000;
        let ones = draws(&p, &logits, n).iter().filter(|&&t| t == 1).count();
        let share = ones as f64 / n as f64;
        // Standard deviation is about 0.009; 0.035 is roughly four of them.
        assert!((share - 0.8).abs() < 0.035, "share of token 1: {share}");
    }

    #[test]
    fn repetition_penalty_demotes_seen_token() {
        // Token 0 was in the prompt and leads slightly; token 1 is unseen.
        let logits = [2.0, 1.8, -5.0];
        let p = params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 1.3;
        });
        let mut s = Sampler::new(p.clone(), &[0]);
        assert_eq!(s.sample(&logits).id, 1);
        // Without the prompt token the leader wins.
        assert_eq!(Sampler::new(p, &[]).sample(&logits).id, 0);
    }

    #[test]
    fn repetition_penalty_pushes_negative_logits_down() {
        let p = params(|p| p.repetition_penalty = 2.0);
        let s = Sampler::new(p, &[0, 1]);
        let mut scores = vec![-1.0, 4.0, 3.0];
        s.apply_penalties(&mut scores);
        assert_eq!(scores, vec![-2.0, 2.0, 3.0]);
    }

    #[test]
    fn presence_and_frequency_penalties() {
        let p = params(|p| {
            p.presence_penalty = 0.5;
            p.frequency_penalty = 0.25;
        });
        let mut s = Sampler::new(p, &[2]);
        s.output_counts.insert(0, 3);
        s.output_counts.insert(1, 1);
        let mut scores = vec![1.0, 1.0, 1.0];
        s.apply_penalties(&mut scores);
        // Prompt tokens are not penalised by presence/frequency.
        assert_eq!(scores, vec![1.0 - 0.5 - 0.75, 1.0 - 0.5 - 0.25, 1.0]);
    }

    #[test]
    fn greedy_with_frequency_penalty_avoids_repeating() {
        let logits = [1.0, 0.9];
        let p = params(|p| {
            p.temperature = 0.0;
            p.frequency_penalty = 0.2;
        });
        // Token 0 wins, is penalised below token 1, which then wins and is penalised...
        assert_eq!(draws(&p, &logits, 4), vec![0, 1, 0, 1]);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let lp = log_softmax(&fixture_logits(262_144));
        let total: f64 = lp.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "sum {total}");
        assert!(log_softmax(&[f32::NEG_INFINITY; 3]).iter().all(|&x| x == f32::NEG_INFINITY));
    }

    #[test]
    fn logprobs_report_raw_distribution_and_sorted_top() {
        let logits = fixture_logits(3000);
        let lp = log_softmax(&logits);
        let p = params(|p| {
            p.logprobs = Some(5);
            p.seed = Some(8);
            // Penalties and temperature must not change the reported logprobs.
            p.temperature = 0.3;
            p.repetition_penalty = 2.0;
        });
        let mut s = Sampler::new(p, &[1, 2, 3]);
        let tok = s.sample(&logits);
        assert!((tok.logprob - lp[tok.id as usize]).abs() < 1e-5);

        let mut expected: Vec<(u32, f32)> = lp.iter().copied().enumerate().map(|(i, x)| (i as u32, x)).collect();
        expected.sort_by(best_first);
        expected.truncate(5);
        assert_eq!(tok.top.len(), 5);
        for (got, want) in tok.top.iter().zip(&expected) {
            assert_eq!(got.0, want.0);
            assert!((got.1 - want.1).abs() < 1e-5);
        }
        assert!(tok.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn no_top_list_unless_requested() {
        let tok = Sampler::new(SamplingParams::default(), &[]).sample(&[0.0, 1.0]);
        assert!(tok.top.is_empty());
        assert!(tok.logprob <= 0.0);
    }

    #[test]
    fn logit_bias_bans_and_favours_but_leaves_logprobs_raw() {
        let logits = fixture_logits(1000);
        let best = argmax(&logits);
        let lp = log_softmax(&logits);
        let p = params(|p| {
            p.seed = Some(3);
            p.logit_bias = vec![(best, -100.0), (7, 100.0)];
        });
        let mut s = Sampler::new(p, &[]);
        for _ in 0..50 {
            let tok = s.sample(&logits);
            assert_eq!(tok.id, 7);
            assert!((tok.logprob - lp[7]).abs() < 1e-5);
        }
        let bad = params(|p| p.logit_bias = vec![(1, 100.5)]);
        assert!(bad.validate().unwrap_err().to_string().contains("logit_bias"));
        let many = params(|p| p.logit_bias = (0..301).map(|i| (i, 1.0)).collect());
        assert!(many.validate().unwrap_err().to_string().contains("at most 300"));
    }

    #[test]
    fn masked_scores_decide_the_draw_and_raw_logits_the_logprob() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let scores = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
        let mut s = Sampler::new(params(|p| p.seed = Some(1)), &[]);
        let tok = s.sample_with(&logits, &scores);
        assert_eq!(tok.id, 1);
        assert!((tok.logprob - log_softmax(&logits)[1]).abs() < 1e-6);
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        let p = params(|p| p.seed = Some(4));
        assert!(draws(&p, &logits, 200).iter().all(|&t| t == 1 || t == 3));
    }

    #[test]
    fn validate_accepts_defaults_and_names_field_and_limit() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        let cases: Vec<(SamplingParams, &str, &str)> = vec![
            (params(|p| p.temperature = 2.5), "temperature", "[0, 2]"),
            (params(|p| p.temperature = f32::NAN), "temperature", "[0, 2]"),
            (params(|p| p.top_p = 0.0), "top_p", "(0, 1]"),
            (params(|p| p.top_k = 2_000_000), "top_k", "1000000"),
            (params(|p| p.repetition_penalty = 0.0), "repetition_penalty", "(0, 10]"),
            (params(|p| p.presence_penalty = -3.0), "presence_penalty", "[-2, 2]"),
            (params(|p| p.frequency_penalty = 2.1), "frequency_penalty", "[-2, 2]"),
            (params(|p| p.logprobs = Some(21)), "logprobs", "20"),
        ];
        for (p, field, limit) in cases {
            let msg = p.validate().unwrap_err().to_string();
            assert!(msg.contains(field) && msg.contains(limit), "{msg}");
        }
    }

    #[test]
    fn params_deserialize_with_defaults() {
        let p: SamplingParams = serde_json::from_str(r#"{"temperature":0.2,"seed":7}"#).unwrap();
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.seed, Some(7));
        assert_eq!(p.top_p, 1.0);
    }
}
