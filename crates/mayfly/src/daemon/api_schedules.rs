//! REST handlers of schedules: `GET /v1/schedules` (every schedule),
//! `GET`/`POST /v1/instances/{name}/schedules` (one instance's; add one), and
//! `DELETE /v1/instances/{name}/schedules/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use mayfly_api::{CreateSchedule, ScheduleInfo};
use mayfly_engine::Engine;

use super::api::{ApiFailure, bad_request, detached, json_body};

type AppState = Arc<Engine>;

/// `GET /v1/schedules`: every schedule, by id.
pub(super) async fn list_all(
    State(engine): State<AppState>,
) -> Result<Json<Vec<ScheduleInfo>>, ApiFailure> {
    Ok(Json(engine.list_schedules(None).await?))
}

/// `GET /v1/instances/{name}/schedules`.
pub(super) async fn list_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ScheduleInfo>>, ApiFailure> {
    Ok(Json(engine.list_schedules(Some(&name)).await?))
}

/// `POST /v1/instances/{name}/schedules` ([`CreateSchedule`]): `201` with the schedule.
pub(super) async fn add(
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
pub(super) async fn remove(
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
