//! REST handlers of schedules: `GET /v1/schedules` (every schedule),
//! `GET`/`POST /v1/instances/{name}/schedules` (one instance's; add one), and
//! `DELETE /v1/instances/{name}/schedules/{id}`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use mayfly_api::{CreateSchedule, ScheduleInfo};
use mayfly_engine::Engine;

use super::api::{ApiFailure, bad_request, detached, json_body};

type AppState = Arc<Engine>;

/// The routes of schedules.
pub(super) fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route(mayfly_api::paths::SCHEDULES, get(list_all))
        .route(
            "/v1/instances/{name}/schedules",
            get(list_instance).post(add),
        )
        .route("/v1/instances/{name}/schedules/{id}", delete(remove))
}

/// `GET /v1/schedules`: every schedule, by id.
async fn list_all(State(engine): State<AppState>) -> Result<Json<Vec<ScheduleInfo>>, ApiFailure> {
    Ok(Json(engine.list_schedules(None).await?))
}

/// `GET /v1/instances/{name}/schedules`.
async fn list_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ScheduleInfo>>, ApiFailure> {
    Ok(Json(engine.list_schedules(Some(&name)).await?))
}

/// `POST /v1/instances/{name}/schedules` ([`CreateSchedule`]): `201` with the schedule.
async fn add(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<(StatusCode, Json<ScheduleInfo>), ApiFailure> {
    let body: CreateSchedule = json_body(req.into_body()).await?;
    let info = detached(async move { engine.add_schedule(&name, body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `DELETE /v1/instances/{name}/schedules/{id}`: `204`; `404` when the instance has no
/// schedule of that id. The snapshots it made stay.
async fn remove(
    State(engine): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiFailure> {
    let id: u64 = id.parse().map_err(|_| {
        bad_request(
            format!("invalid schedule id `{id}`: ids are whole numbers"),
            format!("see `mayfly schedule list {name}` for the ids"),
        )
    })?;
    detached(async move { engine.remove_schedule(&name, id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
