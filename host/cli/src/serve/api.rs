//! The HTTP surface of `zu serve`: the JSON API the pages use and scripts
//! can call (`/api/runs`, `/api/runs/{task}`, `/api/runs/{task}/events`,
//! `/api/stream` as server-sent events, `/healthz`), the pages and their
//! assets, the login and logout routes, and the access rules in front.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use zu_plugin_api::filter::{EventFilter, FilterField};
use zu_runtime::LoggedEvent;

use super::access::{self, Caller};
use super::login;
use super::{pages, App, AppState};

/// Every route: the security headers on all, the host rule in front of all,
/// the token rule in front of all but the login page and the static assets.
pub fn router(app: Arc<App>) -> Router {
    let guarded = Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{task}", get(pages::run))
        .route("/compare", get(pages::compare))
        .route("/logout", post(logout))
        .route("/healthz", get(health))
        .route("/api/runs", get(runs))
        .route("/api/runs/{task}", get(one_run))
        .route("/api/runs/{task}/events", get(events))
        .route("/api/stream", get(stream_events))
        .layer(middleware::from_fn_with_state(app.clone(), access::token_rule));
    Router::new()
        .route("/login", get(login_link).post(login_form))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/app.css", get(pages::style))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(app.clone(), access::host_rule))
        .layer(middleware::from_fn(access::headers))
        .with_state(app)
}

#[derive(Deserialize)]
struct LoginLink {
    code: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_link(
    State(app): AppState,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LoginLink>,
) -> Response {
    login::login(&app, client.ip(), &headers, q.code.as_deref(), None).await
}

async fn login_form(
    State(app): AppState,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    login::login(&app, client.ip(), &headers, None, Some(&f.token)).await
}

async fn logout(State(app): AppState, Extension(caller): Extension<Caller>) -> Response {
    login::logout(&app, &caller).await
}

async fn health(State(app): AppState) -> Json<Value> {
    let index = app.shared.index.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({"ok": true, "ready": index.ready, "read_to_seq": index.read_to, "runs": index.runs.len()}))
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    q: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn runs(State(app): AppState, Query(q): Query<RunsQuery>) -> Json<Value> {
    let index = app.shared.index.lock().unwrap_or_else(|p| p.into_inner());
    let text = q.q.as_deref().map(str::to_lowercase).filter(|t| !t.is_empty());
    let mut rows: Vec<_> = index
        .runs
        .values()
        .filter(|r| q.status.as_deref().is_none_or(|s| s.is_empty() || s == r.status))
        .filter(|r| {
            text.as_ref().is_none_or(|t| {
                r.query.to_lowercase().contains(t.as_str())
                    || r.task_id.to_string().contains(t.as_str())
                    || r.trace_id.to_string().contains(t.as_str())
                    || r.reason
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(t.as_str()))
            })
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.seq));
    let per_page = q.per_page.unwrap_or(50).clamp(1, 500);
    let page = q.page.unwrap_or(1).max(1);
    let total = rows.len();
    let shown: Vec<_> = rows
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    Json(json!({"runs": shown, "total": total, "page": page, "per_page": per_page, "ready": index.ready}))
}

async fn one_run(State(app): AppState, Path(task): Path<Uuid>) -> Response {
    let index = app.shared.index.lock().unwrap_or_else(|p| p.into_inner());
    match index.runs.get(&task) {
        Some(r) => Json(json!(r)).into_response(),
        None => not_found(task),
    }
}

fn not_found(task: Uuid) -> Response {
    let body = Json(json!({"error": format!("no run of task {task} on this log")}));
    (StatusCode::NOT_FOUND, body).into_response()
}

/// An event as the API shows it: scoped (or full) with its sequence number.
fn shown(app: &App, e: &LoggedEvent) -> Value {
    let mut v = zu_runtime::view::scope_event(&e.event, app.full);
    v["seq"] = e.seq.into();
    v
}

#[derive(Deserialize)]
struct EventsQuery {
    after_seq: Option<u64>,
    limit: Option<u64>,
}

async fn events(State(app): AppState, Path(task): Path<Uuid>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.unwrap_or(10_000).clamp(1, 50_000);
    let filter = EventFilter::all().with(FilterField::TaskId, Some(task.to_string()));
    let app2 = app.clone();
    let page =
        tokio::task::spawn_blocking(move || app2.bus.query(&filter, Some(limit), q.after_seq.unwrap_or(0))).await;
    match page {
        Ok(Ok(page)) => {
            let next = page.last().map(|e| e.seq);
            let more = page.len() as u64 == limit;
            let shown: Vec<Value> = page.iter().map(|e| shown(&app, e)).collect();
            Json(json!({"events": shown, "next_after_seq": next, "more": more, "full": app.full})).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("cannot read the log: {e}")})),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

#[derive(Deserialize)]
struct StreamQuery {
    task: Option<Uuid>,
    after_seq: Option<u64>,
}

/// New events as server-sent events (`id` = seq, `data` = the event), for
/// one task or all; with `after_seq`, those already on the log after it first.
async fn stream_events(
    State(app): AppState,
    Query(q): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let live = tokio_stream::wrappers::BroadcastStream::new(app.shared.live.subscribe());
    let mut backlog = Vec::new();
    if let Some(after) = q.after_seq {
        let mut filter = EventFilter::all();
        if let Some(t) = q.task {
            filter = filter.with(FilterField::TaskId, Some(t.to_string()));
        }
        let app2 = app.clone();
        if let Ok(Ok(page)) = tokio::task::spawn_blocking(move || app2.bus.query(&filter, Some(50_000), after)).await {
            backlog = page;
        }
    }
    let last = backlog.last().map_or(0, |e| e.seq);
    let task = q.task;
    let (a, b) = (app.clone(), app);
    let first = stream::iter(backlog).map(move |e| Ok(sse(&a, &e)));
    let rest = live.filter_map(move |e| {
        let out = match e {
            Ok(e) if e.seq > last && task.is_none_or(|t| e.event.task_id() == t) => Some(Ok(sse(&b, &e))),
            // A reader that fell behind is told so; it can reload.
            Err(_) => Some(Ok(SseEvent::default().event("lagged").data("{}"))),
            _ => None,
        };
        std::future::ready(out)
    });
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::default())
}

fn sse(app: &App, e: &LoggedEvent) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .data(shown(app, e).to_string())
}
