//! The streamable-HTTP client for MCP servers reached by URL: reqwest, with
//! each answer capped while it is read. A JSON answer past the cap becomes
//! an error of zu's for its request (the call is refused as too large); an
//! event stream's events past the cap end the stream. A hostile server
//! cannot make zu hold a 500 MB result.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{BoxStream, StreamExt};
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse};
use serde_json::json;
use sse_stream::{Error as SseError, Sse, SseStream};

use crate::capped::{CUT_CODE, CUT_MESSAGE};

const SESSION: &str = "Mcp-Session-Id";
const EVENTS: &str = "text/event-stream";
const JSON: &str = "application/json";

type Error = StreamableHttpError<reqwest::Error>;

/// reqwest with every answer read under `cap` bytes.
#[derive(Clone)]
pub struct CappedHttp {
    inner: reqwest::Client,
    cap: usize,
}

impl CappedHttp {
    pub fn new(cap: usize) -> Self {
        CappedHttp {
            inner: reqwest::Client::new(),
            cap,
        }
    }

    /// The body, or `None` past the cap (read no further).
    async fn body(&self, mut response: reqwest::Response) -> Result<Option<Vec<u8>>, Error> {
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(StreamableHttpError::Client)? {
            if out.len() + chunk.len() > self.cap {
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }
}

/// The error answering `message` (a request) that was cut.
fn cut(message: &ClientJsonRpcMessage, cap: usize) -> Option<ServerJsonRpcMessage> {
    let id = serde_json::to_value(message).ok()?.get("id")?.clone();
    let error = json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": CUT_CODE, "message": format!("{CUT_MESSAGE} {cap} bytes; zu cut it while reading")}});
    serde_json::from_value(error).ok()
}

/// `stream` with each server-sent event (bytes up to a blank line) capped.
fn capped_events(
    stream: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    cap: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let mut since = 0usize;
    let mut last = 0u8;
    let limited = stream.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        for &b in chunk.iter() {
            since = if b == b'\n' && last == b'\n' { 0 } else { since + 1 };
            if b != b'\r' {
                last = b;
            }
            if since > cap {
                return Err(std::io::Error::other(format!("{CUT_MESSAGE} {cap} bytes (an event)")));
            }
        }
        Ok(chunk)
    });
    SseStream::from_bytes_stream(limited).boxed()
}

impl StreamableHttpClient for CappedHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let mut request = self
            .inner
            .post(uri.as_ref())
            .header(ACCEPT, format!("{EVENTS}, {JSON}"));
        if let Some(token) = auth_header {
            request = request.bearer_auth(token);
        }
        for (k, v) in custom_headers {
            request = request.header(k, v);
        }
        let had_session = session_id.is_some();
        if let Some(s) = session_id {
            request = request.header(SESSION, s.as_ref());
        }
        let response = request
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if matches!(status, reqwest::StatusCode::ACCEPTED | reqwest::StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == reqwest::StatusCode::NOT_FOUND && had_session {
            return Err(StreamableHttpError::SessionExpired);
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, session) = (header(CONTENT_TYPE.as_str()), header(SESSION));
        let answers_nothing = matches!(
            message,
            ClientJsonRpcMessage::Notification(_) | ClientJsonRpcMessage::Response(_) | ClientJsonRpcMessage::Error(_)
        );
        if status.is_success() && response.content_length() == Some(0) && answers_nothing {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        let is = |mime: &str| content_type.as_deref().is_some_and(|ct| ct.starts_with(mime));
        if status.is_success() && is(EVENTS) {
            return Ok(StreamableHttpPostResponse::Sse(
                capped_events(response.bytes_stream(), self.cap),
                session,
            ));
        }
        if !status.is_success() || !is(JSON) {
            let body = self.body(response).await?.unwrap_or_default();
            if let Ok(m @ ServerJsonRpcMessage::Error(_)) = serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                return Ok(StreamableHttpPostResponse::Json(m, session));
            }
            if status.is_success() {
                return Err(StreamableHttpError::UnexpectedContentType(content_type));
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
                "HTTP {status}: {text}"
            ))));
        }
        match self.body(response).await? {
            Some(body) => match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                Ok(m) => Ok(StreamableHttpPostResponse::Json(m, session)),
                Err(_) => Ok(StreamableHttpPostResponse::Accepted),
            },
            None => match cut(&message, self.cap) {
                Some(error) => {
                    tracing::warn!(cap = self.cap, "an MCP server's answer was over the cap; cut");
                    Ok(StreamableHttpPostResponse::Json(error, session))
                }
                None => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
                    "{CUT_MESSAGE} {} bytes",
                    self.cap
                )))),
            },
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.inner
            .get_stream_with_max_sse_event_size(uri, session_id, last_event_id, auth_header, custom_headers, self.cap)
            .await
    }
}
