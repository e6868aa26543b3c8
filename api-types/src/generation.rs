//! The generation parameters one call may set: shared by `/v1/completions`,
//! `/v1/chat/completions`, template endpoints and the studio's draft runs.

use serde::{Deserialize, Serialize};

/// `stop` as OpenAI takes it: one string or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

impl StopInput {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(s) => vec![s],
            StopInput::Many(v) => v,
        }
    }
}

/// Sampling and length settings of one call; `None` means the endpoint's default (for a
/// template, the version's saved parameter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
}

impl GenerationParams {
    /// The JSON keys this struct reads. A request body is split on them: these go to
    /// `GenerationParams`, the rest to the endpoint's own fields (strict or not, as the
    /// endpoint is), so errors keep naming the exact field.
    pub const FIELDS: &'static [&'static str] = &[
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "seed",
        "stop",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_lists_every_key() {
        let all = GenerationParams {
            max_tokens: Some(1),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(3),
            n: Some(2),
            seed: Some(4),
            stop: Some(StopInput::One("x".into())),
            repetition_penalty: Some(1.1),
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
        };
        let v = serde_json::to_value(&all).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = GenerationParams::FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }
}
