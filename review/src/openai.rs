//! The backend for any OpenAI-compatible chat-completions endpoint: Azure OpenAI, vLLM,
//! Ollama, a llama.cpp server, or a hosted frontier model.
//!
//! One `POST {url}/chat/completions` per attempt, with the review prompt (see
//! [`crate::prompt`]), temperature 0 and JSON output requested (`response_format`); the API
//! key comes from the environment variable the config names, never from the config file. The
//! whole request, body included, is bounded by the configured timeout. The verdict's JSON
//! Schema goes with the request (`response_format`), so servers with structured outputs
//! constrain the answer to it; the answer is parsed strictly all the same. HTTP 408, 429 and 5xx
//! and connection failures are transient (retried by the [`crate::Reviewer`]); 400, 413 and
//! 422 reject this one item (a content filter, a record too long); other HTTP errors (401,
//! 403, 404) are permanent; a reply that is not a chat completion with a valid verdict is
//! malformed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use vigil_core::{Assessment, Category, Severity};

use crate::backend::{Backend, BackendError, Instruction, ReviewRequest};
use crate::parse::parse_answer;
use crate::prompt::{system_message, user_message};

/// `[review.openai]`: where the endpoint is and how to call it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiConfig {
    /// The API's base URL, up to and including `/v1` (for example
    /// `http://127.0.0.1:8080/v1`); `/chat/completions` is appended.
    pub url: String,
    /// The model name sent with each request.
    pub model: String,
    /// The environment variable holding the API key (sent as a bearer token); unset or empty
    /// sends none.
    pub api_key_env: String,
    /// Limit on one whole request, connection to last byte of the answer.
    pub timeout_ms: u64,
    /// Limit on the answer's length, in tokens.
    pub max_tokens: u32,
    /// How JSON output is asked for.
    pub response_format: ResponseFormat,
}

/// The `response_format` sent: how firmly the server is asked for the verdict's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type": "json_schema", ...}` with the verdict's schema (structured outputs: OpenAI,
    /// Azure OpenAI, vLLM and llama.cpp constrain decoding to it).
    JsonSchema,
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// Nothing: for servers that reject the field. The prompt still asks for the JSON.
    None,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/v1".into(),
            model: "default".into(),
            api_key_env: "VIGIL_REVIEW_API_KEY".into(),
            timeout_ms: 30_000,
            max_tokens: 256,
            response_format: ResponseFormat::JsonSchema,
        }
    }
}

/// A chat-completions client.
pub struct OpenAiBackend {
    agent: ureq::Agent,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    max_tokens: u32,
    response_format: ResponseFormat,
}

impl OpenAiBackend {
    /// A client for the endpoint `config` describes, with the API key read from the
    /// environment now.
    pub fn new(config: &OpenAiConfig) -> Self {
        let api_key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|key| !key.is_empty());
        Self {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(config.timeout_ms))
                .build(),
            endpoint: format!("{}/chat/completions", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            api_key,
            max_tokens: config.max_tokens,
            response_format: config.response_format,
        }
    }
}

/// The JSON Schema of the verdict format (see [`crate::prompt`]). Only keywords every
/// structured-output implementation accepts (OpenAI's strict mode rejects some range and
/// length keywords); ranges are checked by the parser.
fn verdict_schema() -> serde_json::Value {
    let categories: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
    let severities: Vec<&str> = Severity::ALL.iter().map(|s| s.name()).collect();
    json!({
        "type": "object",
        "properties": {
            "violation": {"type": "boolean"},
            "categories": {"type": "array", "items": {"type": "string", "enum": categories}},
            "severity": {"type": "string", "enum": severities},
            "confidence": {"type": "number"},
            "rationale": {"type": "string"},
        },
        "required": ["violation", "categories", "severity", "confidence", "rationale"],
        "additionalProperties": false,
    })
}

/// The part of a chat completion the reviewer reads.
#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

impl Backend for OpenAiBackend {
    fn model(&self) -> String {
        format!("openai:{}", self.model)
    }

    fn assess(
        &self,
        request: &ReviewRequest<'_>,
        instruction: Instruction,
    ) -> Result<Assessment, BackendError> {
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": system_message(request.policy, instruction)},
                {"role": "user", "content": user_message(request)},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        });
        match self.response_format {
            ResponseFormat::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": "verdict", "strict": true, "schema": verdict_schema()},
                });
            }
            ResponseFormat::JsonObject => body["response_format"] = json!({"type": "json_object"}),
            ResponseFormat::None => {}
        }
        let mut call = self
            .agent
            .post(&self.endpoint)
            .set("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            call = call.set("Authorization", &format!("Bearer {key}"));
        }
        let response = call.send_json(body).map_err(|error| match error {
            ureq::Error::Status(code, _) if code == 408 || code == 429 || code >= 500 => {
                BackendError::Transient(format!("HTTP {code}"))
            }
            ureq::Error::Status(code @ (400 | 413 | 422), _) => {
                BackendError::Rejected(format!("HTTP {code}"))
            }
            ureq::Error::Status(code, _) => BackendError::Permanent(format!("HTTP {code}")),
            ureq::Error::Transport(transport) => {
                BackendError::Transient(format!("{}", transport.kind()))
            }
        })?;
        let text = response
            .into_string()
            .map_err(|e| BackendError::Transient(format!("reading the response: {}", e.kind())))?;
        let completion: Completion = serde_json::from_str(&text)
            .map_err(|_| BackendError::Malformed("the response is not a chat completion".into()))?;
        let answer = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .ok_or_else(|| BackendError::Malformed("the completion has no message".into()))?;
        parse_answer(&answer, request.content)
    }
}
