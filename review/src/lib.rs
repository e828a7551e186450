//! vigil's LLM reviewer: when monitoring flags a case, an LLM reviews records of its sample
//! first; humans review only what the LLM escalates.
//!
//! - [`Backend`] is the one trait a reviewer model implements: [`OpenAiBackend`] for any
//!   OpenAI-compatible chat-completions endpoint (production: Llama Guard 3, a frontier
//!   model), [`LocalModel`] for the embedded default (SmolLM2-135M-Instruct in GGUF on the
//!   CPU, scored as Llama Guard is: the probability of the "unsafe" label after a fixed
//!   prompt).
//! - [`prompt`] builds the review prompt with the record delimited so content cannot pass for
//!   instructions; [`parse`] reads answers strictly.
//! - [`Reviewer`] adds retries with backoff, the malformed-output rule and a
//!   [`CircuitBreaker`], and routes each assessment by the policy's thresholds into a
//!   [`Verdict`](vigil_core::Verdict): closed, or escalated to humans.
//!
//! The reviewer stores nothing: the caller (the pipeline's review stage) reads content from
//! the store or in flight, and keeps only the verdict, which holds no content.

pub mod backend;
pub mod breaker;
pub mod config;
pub mod local;
pub mod openai;
pub mod parse;
pub mod prompt;
pub mod reviewer;

pub use backend::{Backend, BackendError, Instruction, ReviewRequest, ReviewSignals};
pub use breaker::{BreakerConfig, CircuitBreaker};
pub use config::{BackendKind, ReviewConfig};
pub use local::{LocalConfig, LocalModel};
pub use openai::{OpenAiBackend, OpenAiConfig, ResponseFormat};
pub use reviewer::{route, Item, RetryConfig, ReviewStats, Reviewer};

/// Opens the backend `config` chooses.
pub fn open_backend(config: &ReviewConfig) -> Result<Box<dyn Backend>, local::LocalError> {
    Ok(match config.backend {
        BackendKind::Openai => Box::new(OpenAiBackend::new(&config.openai)),
        BackendKind::Local => Box::new(LocalModel::open(&config.local)?),
    })
}
