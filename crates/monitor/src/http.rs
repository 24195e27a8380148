//! The HTTP side: the page, the JSON API, server-sent events, `/metrics`
//! and the operator actions, on TCP or a Unix socket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::actions::{Action, ActionResult};
use crate::auth::Principal;
use crate::error::MonitorError;
use crate::state::{Level, LogKind, Shared, lock};

type Body = BoxBody<Bytes, Infallible>;

/// How long an action may take before the request answers 504 (a rolling
/// restart waits for the new instance to be ready).
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const UPLOT_JS: &str = include_str!("../assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uPlot.min.css");

/// A running server, from [`Monitor::serve`](crate::Monitor::serve) or
/// [`Monitor::serve_unix`](crate::Monitor::serve_unix). Dropping it stops
/// it, closes its connections (live pages too) and removes its socket file.
#[derive(Debug)]
pub struct Server {
    addr: Option<SocketAddr>,
    path: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The TCP address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The Unix socket it listens on.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) async fn serve_tcp(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> Result<Server, MonitorError> {
    let bind = |source| MonitorError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let task = tokio::spawn(async move {
        // Connections live in the set, so they end with the server.
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            connections.spawn(connection(shared.clone(), TokioIo::new(stream), None));
        }
    });
    Ok(Server {
        addr: Some(addr),
        path: None,
        task,
    })
}

/// How long the accept loop waits after `accept` fails before it tries
/// again: a rate limit, so that a failure that lasts (`EMFILE`: out of file
/// descriptors) does not spin the CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Logs a failed `accept` and backs off before the next one.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "monitor: accept failed; trying again in {ACCEPT_BACKOFF:?}");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

pub(crate) async fn serve_unix(shared: Arc<Shared>, path: PathBuf) -> Result<Server, MonitorError> {
    let listener = tokio::net::UnixListener::bind(&path).map_err(|source| MonitorError::Bind {
        addr: path.display().to_string(),
        source,
    })?;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            // The kernel's word on who is at the other end (SO_PEERCRED).
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            connections.spawn(connection(shared.clone(), TokioIo::new(stream), uid));
        }
    });
    Ok(Server {
        addr: None,
        path: Some(path),
        task,
    })
}

async fn connection<I>(shared: Arc<Shared>, io: I, peer_uid: Option<u32>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req, peer_uid).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

/// An error answer: `{"status": 404, "error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = json(
        status,
        &serde_json::json!({"status": status.as_u16(), "error": message.into()}),
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// Who sent the request: a bearer token if there is one (a wrong token is
/// refused even on the Unix socket), else the Unix peer's uid.
fn authenticate(
    shared: &Shared,
    req: &Request<Incoming>,
    peer_uid: Option<u32>,
) -> Result<Principal, String> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("the Authorization header must be `Bearer <token>`")?;
        return shared
            .access
            .check_token(token.trim())
            .ok_or_else(|| "unknown token".to_owned());
    }
    if let Some(p) = peer_uid.and_then(|uid| shared.access.check_uid(uid)) {
        return Ok(p);
    }
    Err(
        "send `Authorization: Bearer <token>` (the tokens are printed where the monitor started)"
            .into(),
    )
}

/// A path segment, percent-decoded; `None` when it is not valid UTF-8 once
/// decoded, or when a `%` is not followed by two hex digits (which
/// `percent-encoding` would pass through as is: we refuse it instead).
fn decode(segment: &str) -> Option<String> {
    let well_formed = segment.match_indices('%').all(|(i, _)| {
        segment
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer_uid: Option<u32>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    // The page itself carries no data: it is served to anyone, and asks for
    // a token before it reads anything.
    let asset = match path.as_str() {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "/app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        "/uPlot.iife.min.js" => Some(("text/javascript; charset=utf-8", UPLOT_JS)),
        "/uPlot.min.css" => Some(("text/css; charset=utf-8", UPLOT_CSS)),
        _ => None,
    };
    if let Some((ct, body)) = asset {
        if method != Method::GET && method != Method::HEAD {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        return full(StatusCode::OK, ct, body);
    }
    if path != "/metrics" && !path.starts_with("/api/") {
        return error(StatusCode::NOT_FOUND, format!("no such page: {path}"));
    }
    let segments: Option<Vec<String>> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let Some(segments) = segments else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed percent-encoding in the path",
        );
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let request_line = format!("{method} {path}");
    let is_action = method == Method::POST;

    let who = match authenticate(&shared, &req, peer_uid) {
        Ok(p) => p,
        Err(why) => {
            if is_action {
                shared.actions.record(
                    None,
                    request_line,
                    None,
                    ActionResult::Unauthenticated,
                    401,
                    why.clone(),
                );
            }
            return error(StatusCode::UNAUTHORIZED, why);
        }
    };

    if is_action {
        return act(&shared, &who, req, &segs, request_line).await;
    }
    if method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET to read, POST to act",
        );
    }
    match segs.as_slice() {
        ["metrics"] => full(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::render(&shared),
        ),
        ["api", "whoami"] => json(StatusCode::OK, &who),
        ["api", "snapshot"] => json(StatusCode::OK, &shared.snapshot()),
        ["api", "series"] => json(StatusCode::OK, &shared.series()),
        ["api", "log"] => json(StatusCode::OK, &shared.events()),
        ["api", "events"] => sse(&shared),
        ["api", "actions"] => {
            if !who.role.may_read_actions() {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "role {} may not read the action log (operator or auditor may)",
                        who.role
                    ),
                );
            }
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "path": shared.actions.path(),
                    "records": shared.actions.recent(),
                }),
            )
        }
        ["api", "audit"] => {
            if !who.role.may_read_audit() {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "role {} may not read the security audit log (auditor may)",
                        who.role
                    ),
                );
            }
            audit(&shared).await
        }
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The security audit log (forkyard-secure's), its newest records and
/// whether its hash chain is intact.
async fn audit(shared: &Shared) -> Response<Body> {
    let Some(path) = shared.settings.audit_log.clone() else {
        return error(StatusCode::NOT_FOUND, "no security audit log is configured");
    };
    let read = tokio::task::spawn_blocking(move || {
        let verification = forkyard_secure::audit::verify(&path);
        let text = std::fs::read_to_string(&path);
        (path, verification, text)
    })
    .await;
    let Ok((path, verification, text)) = read else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the audit log failed",
        );
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", path.display()),
            );
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let records: Vec<serde_json::Value> = lines
        .iter()
        .skip(lines.len().saturating_sub(500))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|_| serde_json::Value::String((*l).to_owned()))
        })
        .collect();
    let (intact, findings) = match verification {
        Ok(v) => (
            v.is_intact(),
            v.findings.iter().map(ToString::to_string).collect(),
        ),
        Err(e) => (false, vec![e.to_string()]),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "path": path,
            "lines": lines.len(),
            "intact": intact,
            "findings": findings,
            "records": records,
        }),
    )
}

/// Server-sent events: the snapshot at once, then after every sample
/// (`event: tick`), with a comment every 15 s to keep proxies from closing
/// an idle stream.
fn sse(shared: &Arc<Shared>) -> Response<Body> {
    let rx = shared.ticks.subscribe();
    let first = serde_json::to_string(&shared.snapshot()).unwrap_or_default();
    let frame = |json: &str| {
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
            "event: tick\ndata: {json}\n\n"
        ))))
    };
    let head = futures::stream::once(std::future::ready(frame(&first)));
    let rest = futures::stream::unfold(rx, move |mut rx| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
                Ok(Ok(json)) => return Some((frame(&json), rx)),
                // A page that fell behind just gets the next snapshot.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                Err(_) => {
                    return Some((Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))), rx));
                }
            }
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(head.chain(rest))));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Reads a request body of at most `max` bytes.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
    }
}

/// Parses an action from the path (and body), checks the role, carries it
/// out and records the attempt, whatever its end.
async fn act(
    shared: &Arc<Shared>,
    who: &Principal,
    req: Request<Incoming>,
    segs: &[&str],
    request_line: String,
) -> Response<Body> {
    let record =
        |action: Option<Action>, result: ActionResult, status: StatusCode, detail: String| {
            shared.actions.record(
                Some(who),
                request_line.clone(),
                action.clone(),
                result,
                status.as_u16(),
                detail.clone(),
            );
            if result != ActionResult::Unauthenticated {
                let what = action
                    .as_ref()
                    .map_or_else(|| request_line.clone(), Action::describe);
                let level = match result {
                    ActionResult::Done => Level::Info,
                    _ => Level::Warn,
                };
                shared.log(
                    "monitor".to_owned(),
                    Some(who.name.clone()),
                    LogKind::Action,
                    level,
                    format!("{} ({}) {what}: {detail}", who.name, who.role),
                );
            }
        };
    if !who.role.may_act() {
        let why = format!("role {} may not act (only operator may)", who.role);
        record(
            None,
            ActionResult::Forbidden,
            StatusCode::FORBIDDEN,
            why.clone(),
        );
        return error(StatusCode::FORBIDDEN, why);
    }
    let body = match read_body(req, shared.settings.max_body).await {
        Ok(b) => b,
        Err(resp) => {
            record(
                None,
                ActionResult::Rejected,
                resp.status(),
                "body refused".into(),
            );
            return resp;
        }
    };
    let action = match parse_action(segs, &body) {
        Ok(a) => a,
        Err((status, why)) => {
            record(None, ActionResult::Rejected, status, why.clone());
            return error(status, why);
        }
    };
    let outcome = tokio::time::timeout(ACTION_TIMEOUT, execute(shared, &action)).await;
    let (status, result, detail) = match outcome {
        Ok(Ok(detail)) => (StatusCode::OK, ActionResult::Done, detail),
        Ok(Err((status, why))) => (
            status,
            if status == StatusCode::NOT_FOUND {
                ActionResult::Rejected
            } else {
                ActionResult::Failed
            },
            why,
        ),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            ActionResult::Failed,
            format!("not done within {ACTION_TIMEOUT:?}"),
        ),
    };
    record(Some(action.clone()), result, status, detail.clone());
    if status == StatusCode::OK {
        json(
            status,
            &serde_json::json!({"ok": true, "action": action, "detail": detail}),
        )
    } else {
        error(status, detail)
    }
}

type Refusal = (StatusCode, String);

/// The largest size a resize may ask for (a typo's guard, not a limit of
/// the pool's).
const MAX_WORKERS: usize = 1024;

fn bad(why: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, why.into())
}

/// The body as a JSON object (an empty body is an empty object).
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not valid JSON: {e}"))),
    }
}

fn parse_action(segs: &[&str], body: &[u8]) -> Result<Action, Refusal> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            "no such action: POST /api/pools/{pool}/{resize|breaker|drain}, \
             /api/pools/{pool}/workers/{id}/recycle, or \
             /api/supervisors/{name}/children/{child}/{restart|stop|start}"
                .to_owned(),
        )
    };
    match segs {
        ["api", "pools", pool, "resize"] => {
            let body = body_object(body)?;
            let range = format!("a whole number from 1 to {MAX_WORKERS}");
            let Some(given) = body.get("workers") else {
                return Err(bad(format!("the body must give \"workers\", {range}")));
            };
            let workers = given
                .as_u64()
                .filter(|n| (1..=MAX_WORKERS as u64).contains(n))
                .ok_or_else(|| bad(format!("\"workers\" must be {range}, not {given}")))?;
            Ok(Action::ResizePool {
                pool: (*pool).to_owned(),
                workers: workers as usize,
            })
        }
        ["api", "pools", pool, "workers", id, "recycle" | "restart"] => {
            let worker = id
                .parse::<u64>()
                .map_err(|_| bad(format!("a worker id is a whole number, not {id:?}")))?;
            Ok(Action::RecycleWorker {
                pool: (*pool).to_owned(),
                worker,
            })
        }
        ["api", "pools", pool, "breaker"] => {
            let body = body_object(body)?;
            let open = body
                .get("open")
                .and_then(serde_json::Value::as_bool)
                .ok_or_else(|| bad("the body must say {\"open\": true} or {\"open\": false}"))?;
            Ok(Action::SetBreaker {
                pool: (*pool).to_owned(),
                open,
            })
        }
        ["api", "pools", pool, "drain"] => {
            let body = body_object(body)?;
            let grace_secs = match body.get("grace_secs") {
                None => 10,
                Some(v) => v.as_u64().filter(|n| *n <= 3600).ok_or_else(|| {
                    bad("\"grace_secs\" must be a whole number of seconds up to 3600")
                })?,
            };
            Ok(Action::DrainPool {
                pool: (*pool).to_owned(),
                grace_secs,
            })
        }
        ["api", "supervisors", supervisor, "children", rest @ ..] if rest.len() >= 2 => {
            let (op, child) = rest.split_last().ok_or_else(not_found)?;
            let supervisor = (*supervisor).to_owned();
            let child = child.join("/");
            if child.is_empty() {
                return Err(bad("empty child name"));
            }
            match *op {
                "restart" => Ok(Action::RestartChild { supervisor, child }),
                "stop" => Ok(Action::StopChild { supervisor, child }),
                "start" => Ok(Action::StartChild { supervisor, child }),
                _ => Err(not_found()),
            }
        }
        _ => Err(not_found()),
    }
}

/// One line for the event log from a finished drain's report.
fn drain_summary(report: &forkyard_pool::ShutdownReport) -> String {
    use forkyard_pool::Outcome;
    let completed = report.count(Outcome::Completed);
    let cancelled = report.count(Outcome::Cancelled);
    let failed = report.tasks.len() - completed - cancelled;
    format!(
        "drain finished: {} task(s) ({completed} completed, {failed} failed, {cancelled} cancelled), {} worker(s) ended",
        report.tasks.len(),
        report.workers.len()
    )
}

fn control_error(e: forkyard_pool::ControlError) -> Refusal {
    let status = match e {
        forkyard_pool::ControlError::NoSuchWorker(_) => StatusCode::NOT_FOUND,
        forkyard_pool::ControlError::ZeroSize(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    };
    (status, e.to_string())
}

async fn execute(shared: &Arc<Shared>, action: &Action) -> Result<String, Refusal> {
    let pool = |name: &str| {
        lock(&shared.pools)
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.ops.clone())
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("no pool named {name:?} is watched"),
                )
            })
    };
    match action {
        Action::ResizePool {
            pool: name,
            workers,
        } => {
            let from = pool(name)?.resize(*workers).map_err(control_error)?;
            Ok(format!("resized from {from} to {workers} workers"))
        }
        Action::RecycleWorker { pool: name, worker } => {
            pool(name)?.recycle(*worker).map_err(control_error)?;
            Ok(format!(
                "worker {worker} is being recycled: its replacement starts, then it drains and exits"
            ))
        }
        Action::SetBreaker { pool: name, open } => {
            pool(name)?.set_breaker(*open);
            Ok(if *open {
                "breaker open: no worker starts until it is closed".to_owned()
            } else {
                "breaker closed: missing workers start at once".to_owned()
            })
        }
        Action::DrainPool {
            pool: name,
            grace_secs,
        } => {
            // The drain runs to its end on its own (it ends the pool); the
            // answer does not wait for it. Its report goes to the event log
            // when it ends.
            let drain = pool(name)?.drain(Duration::from_secs(*grace_secs));
            let shared = Arc::clone(shared);
            let name = name.clone();
            tokio::spawn(async move {
                let report = drain.await;
                let message = drain_summary(&report);
                tracing::info!(pool = %name, "monitor: {message}");
                shared.log(
                    "monitor".to_owned(),
                    Some(name),
                    LogKind::Action,
                    Level::Info,
                    message,
                );
            });
            Ok(format!(
                "draining: no new task is taken; queued and running tasks get {grace_secs} s"
            ))
        }
        Action::RestartChild { supervisor, child }
        | Action::StopChild { supervisor, child }
        | Action::StartChild { supervisor, child } => {
            let sup = lock(&shared.sups)
                .iter()
                .find(|s| s.name == *supervisor)
                .map(|s| s.sup.clone())
                .ok_or_else(|| {
                    (
                        StatusCode::NOT_FOUND,
                        format!("no supervisor named {supervisor:?} is watched"),
                    )
                })?;
            let result = match action {
                Action::RestartChild { .. } => sup
                    .restart_child(child)
                    .await
                    .map(|()| "restarted: the new instance is ready"),
                Action::StopChild { .. } => sup.stop_child(child).await.map(|()| "stopped"),
                _ => sup
                    .start_child(child)
                    .await
                    .map(|()| "started: it is ready"),
            };
            result.map(str::to_owned).map_err(|e| {
                let status = match e {
                    forkyard_supervise::Error::NoSuchChild(_) => StatusCode::NOT_FOUND,
                    _ => StatusCode::CONFLICT,
                };
                (status, e.to_string())
            })
        }
    }
}
