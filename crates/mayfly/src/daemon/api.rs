//! REST handlers. Each one parses and validates its request, calls one engine action and
//! turns the result (or the error, through [`ApiFailure`]) into a response. No lifecycle rule
//! lives here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use bytes::Bytes;
use mayfly_api::actions::Method;
use mayfly_api::{
    ACTIONS, Action, ApiError, CreateInstance, ErrorBody, ErrorCode, ImportEvent, RemoveQuery,
    StopRequest,
};
use mayfly_engine::{Engine, EngineError};

use super::api_network as net;
use super::api_resources as res;
use super::events::EventSink;

use Action as A;

/// Largest JSON body accepted.
const MAX_JSON_BODY: usize = 1 << 20;

pub(crate) type AppState = Arc<Engine>;

/// An error response: the API error with its HTTP status.
#[derive(Debug)]
pub(crate) struct ApiFailure(pub ApiError);

impl From<EngineError> for ApiFailure {
    fn from(e: EngineError) -> Self {
        let api = e.to_api();
        if api.code == ErrorCode::Internal {
            tracing::error!("{}", api.message);
        }
        ApiFailure(api)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: self.0 })).into_response()
    }
}

pub(crate) fn bad_request(message: impl Into<String>, hint: impl Into<String>) -> ApiFailure {
    ApiFailure(ApiError::new(ErrorCode::InvalidArgument, message).with_hint(hint))
}

/// Runs an engine action to its end even if the client goes away meanwhile. A handler's
/// future is dropped when its connection closes; an action dropped halfway would leave an
/// instance `starting` or `stopping`, or a journal entry open, with nobody to finish it.
pub(crate) async fn detached<T: Send + 'static>(
    action: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, ApiFailure> {
    // The spawned task is the request's too: what it emits names the request's caller.
    let actor = mayfly_engine::events::current_actor();
    match tokio::spawn(mayfly_engine::events::with_actor(actor, action)).await {
        Ok(result) => result.map_err(ApiFailure::from),
        Err(e) => Err(ApiFailure(ApiError::new(
            ErrorCode::Internal,
            format!("the action failed inside the daemon: {e}"),
        ))),
    }
}

/// Reads a JSON body of at most [`MAX_JSON_BODY`] bytes into `T`, with errors that name the
/// problem (unknown field, wrong type).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiFailure> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|_| {
            ApiFailure(ApiError::new(
                ErrorCode::TooLarge,
                format!("request body is larger than {MAX_JSON_BODY} bytes"),
            ))
        })?;
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        bad_request(
            format!("invalid request body: {e}"),
            "see `mayfly --help` for the fields",
        )
    })
}

/// Parses the query of `uri` into `T`, with errors in the API's shape.
pub(crate) fn query<T: serde::de::DeserializeOwned>(
    uri: &axum::http::Uri,
) -> Result<T, ApiFailure> {
    Query::<T>::try_from_uri(uri).map(|q| q.0).map_err(|e| {
        bad_request(
            format!("invalid query: {}", e.body_text()),
            "check the query parameters",
        )
    })
}

/// The API: the routes of v1 behind two layers, one that accepts a trailing slash
/// (`/v1/instances/` is `/v1/instances`) and one that gives a `405` the API's error body. The
/// outer router only holds them: a layer of the router that routes runs after its routing,
/// too late to change the path, and inside the method router, which adds `Allow` later.
pub(crate) fn router(engine: AppState) -> Router {
    Router::new()
        .fallback_service(routes(engine))
        .layer(axum::middleware::from_fn(method_not_allowed))
        .layer(axum::middleware::from_fn(read_small_body))
        .layer(axum::middleware::map_request(trim_trailing_slash))
}

/// How long a small request body may take to arrive.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a body of JSON size (by its `Content-Length`) before routing, so that whatever
/// answers it (a handler that takes no body, the 404 and 405 answers, a refusal before the
/// body is parsed) answers a request read whole. Otherwise the connection is closed with the
/// body unread under a client still sending it, which loses the answer (a TCP reset, or a
/// broken pipe on the unix socket). Larger bodies, and archives of any size (a template
/// upload: its import reads it as it arrives, under its own limits, and a slow one must not
/// hold the request before the import starts), stream to their handler.
async fn read_small_body(req: Request, next: axum::middleware::Next) -> Response {
    let archive = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| !t.trim_start().starts_with("application/json"));
    let small = !archive
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > 0 && n <= MAX_JSON_BODY);
    if !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, MAX_JSON_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => bad_request(
            format!("cannot read the request body: {e}"),
            "send a body of the length that Content-Length says",
        )
        .into_response(),
        Err(_) => bad_request(
            format!(
                "the request body did not arrive within {}s",
                BODY_DEADLINE.as_secs()
            ),
            "send the whole body at once",
        )
        .into_response(),
    }
}

/// `/v1/instances/` → `/v1/instances` (the query stays).
async fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rewritten = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(pq) = axum::http::uri::PathAndQuery::try_from(rewritten) {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// The routes of API v1, built from the action table: each path of [`ACTIONS`] gets the
/// handlers of its actions (see [`handler`]), each wrapped in [`super::audit::around`]. The
/// web page's static routes are not actions (they hold no data) and are merged as they are.
fn routes(engine: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for spec in ACTIONS {
        let route = by_path.remove(spec.path).unwrap_or_default();
        by_path.insert(spec.path, route.merge(handler(spec.action)));
    }
    let mut router = Router::new();
    for (path, route) in by_path {
        router = router.route(path, route);
    }
    router
        .merge(super::web::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(engine)
}

/// The handler of `action`: one arm per [`Action`] (the match is exhaustive, so an action
/// added to the table without a handler does not compile). The method comes from the table.
fn handler(action: Action) -> MethodRouter<AppState> {
    use super::{api_schedules as sched, api_volumes as vol, auth, stream};
    match action {
        A::Info => to(action, info),
        A::OpenApi => to(action, super::openapi::document),
        A::Metrics => to(action, super::metrics::metrics),
        A::Events => to(action, super::api_events::events),
        A::ListTemplates => to(action, list_templates),
        // An archive upload is not a JSON body: it is read as it is unpacked, unbounded.
        A::ImportTemplate => to(
            action,
            super::import::import_template.layer(DefaultBodyLimit::disable()),
        ),
        A::TemplateInfo => to(action, template_info),
        A::RemoveTemplate => to(action, remove_template),
        A::BuildTemplate => to(action, build_template),
        A::PatchTemplate => to(action, patch_template),
        A::RollbackTemplate => to(action, rollback_template),
        A::Rollout => to(action, rollout),
        A::CollectGarbage => to(action, collect_garbage),
        A::ListInstances => to(action, list_instances),
        A::CreateInstance => to(action, create_instance),
        A::InstanceInfo => to(action, instance_info),
        A::RemoveInstance => to(action, remove_instance),
        A::StartInstance => to(action, start_instance),
        A::StopInstance => to(action, stop_instance),
        A::RestartInstance => to(action, restart_instance),
        A::ResetInstance => to(action, reset_instance),
        A::PauseInstance => to(action, res::pause_instance),
        A::ResumeInstance => to(action, res::resume_instance),
        A::RenameInstance => to(action, net::rename_instance),
        A::SetLimits => to(action, res::set_limits),
        A::Exec => to(action, stream::exec),
        A::Terminal => to(action, super::web::terminal),
        A::Console => to(action, stream::console),
        A::Logs => to(action, super::api_logs::logs),
        A::Run => to(action, stream::run),
        A::ListSnapshots => to(action, list_snapshots),
        A::CreateSnapshot => to(action, create_snapshot),
        A::SnapshotInfo => to(action, snapshot_info),
        A::RemoveSnapshot => to(action, remove_snapshot),
        A::RestoreSnapshot => to(action, restore_snapshot),
        A::CloneInstance => to(action, clone_instance),
        A::Publish => to(action, publish),
        A::ListNetworks => to(action, net::list_networks),
        A::CreateNetwork => to(action, net::create_network),
        A::NetworkInfo => to(action, net::network_info),
        A::RemoveNetwork => to(action, net::remove_network),
        A::ListChannels => to(action, net::list_channels),
        A::CreateChannel => to(action, net::create_channel),
        A::RemoveChannel => to(action, net::remove_channel),
        A::ListFlavors => to(action, res::list_flavors),
        A::CreateFlavor => to(action, res::create_flavor),
        A::FlavorInfo => to(action, res::flavor_info),
        A::RemoveFlavor => to(action, res::remove_flavor),
        A::Stats => to(action, res::stats),
        A::ListVolumes => to(action, vol::list_volumes),
        A::CreateVolume => to(action, vol::create_volume),
        A::VolumeInfo => to(action, vol::volume_info),
        A::RemoveVolume => to(action, vol::remove_volume),
        A::AttachVolume => to(action, vol::attach_volume),
        A::DetachVolume => to(action, vol::detach_volume),
        A::ListAllSchedules => to(action, sched::list_all),
        A::ListSchedules => to(action, sched::list_instance),
        A::AddSchedule => to(action, sched::add),
        A::RemoveSchedule => to(action, sched::remove),
        A::ListTokens => to(action, auth::list_tokens),
        A::CreateToken => to(action, auth::create_token),
        A::RevokeToken => to(action, auth::revoke_token),
        A::Login => to(action, auth::login),
        A::Logout => to(action, auth::logout),
    }
}

/// `handler` as the route of `action`'s method, wrapped in [`super::audit::around`]: the one
/// place every action goes through (its caller, its audit record, its metrics).
fn to<H, T>(action: Action, handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match action.method() {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    };
    let around = axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
        super::audit::around(action, req, next)
    });
    on(filter, handler.layer(around))
}

/// Gives the router's bare `405 Method Not Allowed` the API's error body, naming the methods
/// the path takes (from the `Allow` header the router sets).
async fn method_not_allowed(req: Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let hint = if allow.is_empty() {
        "check the method".to_owned()
    } else {
        format!("{path} takes {}", allow.replace(',', ", "))
    };
    let mut answer = ApiFailure(
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("method {method} is not allowed on {path}"),
        )
        .with_hint(hint),
    )
    .into_response();
    if let Some(v) = response.headers().get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, v.clone());
    }
    answer
}

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    let id = REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let start = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        request = id,
        %method,
        %path,
        status = response.status().as_u16(),
        micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

async fn not_found(req: Request) -> ApiFailure {
    ApiFailure(
        ApiError::new(
            ErrorCode::NotFound,
            format!("no API endpoint {} {}", req.method(), req.uri().path()),
        )
        .with_hint("the API lives under /v1; see `mayfly --help`"),
    )
}

async fn info(
    State(engine): State<AppState>,
    auth: Option<axum::Extension<Arc<super::auth::Auth>>>,
) -> Result<Json<mayfly_api::DaemonInfo>, ApiFailure> {
    let mut info = engine.info().await?;
    info.tls_fingerprint = auth.and_then(|a| a.fingerprint.clone());
    Ok(Json(info))
}

// ---- templates ------------------------------------------------------------------------------

async fn list_templates(
    State(engine): State<AppState>,
) -> Result<Json<Vec<mayfly_api::TemplateInfo>>, ApiFailure> {
    Ok(Json(engine.list_templates().await?))
}

async fn template_info(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<mayfly_api::TemplateInfo>, ApiFailure> {
    Ok(Json(engine.template_info(&name).await?))
}

/// `DELETE /v1/templates/{name}` removes the template; `{name}@{N}` only that version.
async fn remove_template(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    match name.split_once('@') {
        Some((n, v)) => {
            let version = v
                .parse::<u32>()
                .map_err(|_| bad_request(format!("invalid version in `{name}`"), "use NAME@N"))?;
            {
                let n = n.to_owned();
                detached(async move { engine.remove_template_version(&n, version).await }).await?;
            }
        }
        None => detached(async move { engine.remove_template(&name).await }).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The event that reports output lines dropped because the client reads too slowly.
pub(super) fn dropped_lines(n: u64) -> ImportEvent {
    ImportEvent::Log {
        line: format!("[… {n} lines dropped: the client reads too slowly]"),
    }
}

/// The outcome of a template job as its final event.
fn import_outcome(result: Result<mayfly_api::TemplateInfo, EngineError>) -> ImportEvent {
    match result {
        Ok(info) => ImportEvent::Done(Box::new(info)),
        Err(e) => ImportEvent::Error(ApiFailure::from(e).0),
    }
}

/// Build output as events; lines a slow client has no room for are counted, not kept.
fn log_to(events: EventSink<ImportEvent>) -> mayfly_engine::BuildLog {
    Arc::new(move |line: &str| {
        events.counted(ImportEvent::Log {
            line: line.to_owned(),
        });
    })
}

/// `POST /v1/templates/{name}/build`: answers [`ImportEvent`] lines.
async fn build_template(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let mut body: mayfly_api::BuildTemplate = json_body(req.into_body()).await?;
    body.name = name;
    let (events, response) = EventSink::new(dropped_lines);
    let log = log_to(events.clone());
    mayfly_engine::events::spawn(async move {
        let result = engine.build_template(body, log).await;
        events.finish(Some(import_outcome(result))).await;
    });
    Ok(response)
}

/// `POST /v1/templates/{name}/patch`: answers [`ImportEvent`] lines.
async fn patch_template(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let body: mayfly_api::PatchTemplate = json_body(req.into_body()).await?;
    let (events, response) = EventSink::new(dropped_lines);
    let log = log_to(events.clone());
    mayfly_engine::events::spawn(async move {
        let result = engine.patch_template(&name, body, log).await;
        events.finish(Some(import_outcome(result))).await;
    });
    Ok(response)
}

async fn rollback_template(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<mayfly_api::TemplateInfo>, ApiFailure> {
    let body: mayfly_api::RollbackRequest = json_body(req.into_body()).await?;
    Ok(Json(
        detached(async move { engine.rollback_template(&name, body.to).await }).await?,
    ))
}

/// `POST /v1/templates/{name}/rollout`: answers [`mayfly_api::RolloutEvent`] lines.
async fn rollout(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let body: mayfly_api::RolloutRequest = json_body(req.into_body()).await?;
    let (events, response) = EventSink::new(dropped_rollout_events);
    let sink = events.clone();
    let log: mayfly_engine::RolloutLog = Arc::new(move |ev| match ev {
        // The result: delivered whatever the client's pace, after everything else.
        mayfly_api::RolloutEvent::Done { .. } | mayfly_api::RolloutEvent::Error(_) => {
            sink.keep_last(ev);
        }
        ev => sink.counted(ev),
    });
    mayfly_engine::events::spawn(async move {
        let outcome = engine.rollout(&name, body, log).await;
        events
            .finish(outcome.err().map(|e| mayfly_engine::rollout_error(&e)))
            .await;
    });
    Ok(response)
}

/// The event that reports rollout events dropped because the client reads too slowly.
fn dropped_rollout_events(n: u64) -> mayfly_api::RolloutEvent {
    mayfly_api::RolloutEvent::Instance {
        name: "-".to_owned(),
        status: "dropped".to_owned(),
        detail: format!("{n} events dropped: the client reads too slowly"),
    }
}

async fn collect_garbage(
    State(engine): State<AppState>,
) -> Result<Json<mayfly_api::GcReport>, ApiFailure> {
    Ok(Json(
        detached(async move { engine.collect_garbage().await }).await?,
    ))
}

// ---- instances ------------------------------------------------------------------------------

async fn list_instances(
    State(engine): State<AppState>,
) -> Result<Json<Vec<mayfly_api::InstanceInfo>>, ApiFailure> {
    Ok(Json(engine.list_instances().await?))
}

async fn instance_info(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    Ok(Json(engine.instance_info(&name).await?))
}

async fn create_instance(
    State(engine): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<mayfly_api::InstanceInfo>), ApiFailure> {
    let body: CreateInstance = json_body(req.into_body()).await?;
    let info = detached(async move { engine.create_instance(body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /v1/instances/{name}/start`: `200` with the instance; `note` says `already
/// running` when there was nothing to do.
async fn start_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    Ok(Json(
        detached(async move { engine.start_instance(&name).await }).await?,
    ))
}

/// `POST /v1/instances/{name}/stop`: `200` with the instance as it is after the stop; `note`
/// says `already stopped` when there was nothing to do, or that an ephemeral instance was
/// removed (the answer then shows it as it was last).
async fn stop_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    let body: StopRequest = json_body(req.into_body()).await?;
    Ok(Json(
        detached(async move { engine.stop_instance(&name, body).await }).await?,
    ))
}

async fn restart_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    let body: StopRequest = json_body(req.into_body()).await?;
    Ok(Json(
        detached(async move { engine.restart_instance(&name, body).await }).await?,
    ))
}

async fn reset_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    let body: StopRequest = json_body(req.into_body()).await?;
    Ok(Json(
        detached(async move { engine.reset_instance(&name, body).await }).await?,
    ))
}

async fn remove_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<StatusCode, ApiFailure> {
    let q: RemoveQuery = query(req.uri())?;
    detached(async move { engine.remove_instance(&name, q.force, q.snapshots).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- snapshots, clone, publish ---------------------------------------------------------------

async fn list_snapshots(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<mayfly_api::SnapshotInfo>>, ApiFailure> {
    Ok(Json(engine.list_snapshots(&name).await?))
}

async fn create_snapshot(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<mayfly_api::SnapshotInfo>), ApiFailure> {
    let body: mayfly_api::CreateSnapshot = json_body(req.into_body()).await?;
    let info = detached(async move { engine.create_snapshot(&name, body.name).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn snapshot_info(
    State(engine): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Json<mayfly_api::SnapshotInfo>, ApiFailure> {
    Ok(Json(engine.snapshot_details(&name, &snap).await?))
}

async fn remove_snapshot(
    State(engine): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<StatusCode, ApiFailure> {
    detached(async move { engine.remove_snapshot(&name, &snap).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore_snapshot(
    State(engine): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Json<mayfly_api::InstanceInfo>, ApiFailure> {
    Ok(Json(
        detached(async move { engine.restore_snapshot(&name, &snap).await }).await?,
    ))
}

async fn clone_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<mayfly_api::InstanceInfo>), ApiFailure> {
    let body: mayfly_api::CloneRequest = json_body(req.into_body()).await?;
    let info = detached(async move { engine.clone_instance(&name, body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn publish(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<mayfly_api::TemplateInfo>), ApiFailure> {
    let body: mayfly_api::PublishRequest = json_body(req.into_body()).await?;
    let info = detached(async move { engine.publish(&name, body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}
