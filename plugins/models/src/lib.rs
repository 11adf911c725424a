//! Real model providers over HTTP: `openai` (the chat-completions API of
//! OpenAI, OpenRouter, Ollama, llama.cpp's server, vLLM) and `anthropic`
//! (the Messages API). Both take `{"base_url", "model", "api_key_env",
//! "timeout_s", "max_tokens", "temperature", "headers", "max_retries"}`.
//!
//! They map Zu's messages and tool schemas to the API and back (tool-call
//! arguments that are not a JSON object come back as a call the loop
//! answers with an error for the model, not a crash), report usage and the
//! served model id, retry 429 and 5xx with backoff that honours
//! `Retry-After` and never waits past the run's deadline, and end a run
//! with a reason that says what to do on 401/403, an unknown model, or an
//! answer that is not the protocol.

#![forbid(unsafe_code)]

pub mod anthropic;
mod http;
pub mod openai;

pub use anthropic::Anthropic;
pub use http::Common;
pub use openai::OpenAi;

#[cfg(feature = "export")]
zu_plugin_api::export_plugins! { providers: [OpenAi, Anthropic] }
