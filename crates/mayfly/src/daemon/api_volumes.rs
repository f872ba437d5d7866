//! REST handlers of volumes (`/v1/volumes`). As in [`super::api`], each parses its request,
//! calls one engine action, and answers its result or its error (through [`ApiFailure`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use mayfly_api::{AttachVolume, CreateVolume, DetachVolume, VolumeInfo};
use mayfly_engine::Engine;

use super::api::{ApiFailure, detached, json_body};

type AppState = Arc<Engine>;

/// `GET /v1/volumes`.
pub(super) async fn list_volumes(
    State(engine): State<AppState>,
) -> Result<Json<Vec<VolumeInfo>>, ApiFailure> {
    Ok(Json(engine.list_volumes().await?))
}

/// `POST /v1/volumes` ([`CreateVolume`]): `201` with the new volume.
pub(super) async fn create_volume(
    State(engine): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<VolumeInfo>), ApiFailure> {
    let body: CreateVolume = json_body(req.into_body()).await?;
    let info = detached(async move { engine.create_volume(body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/volumes/{name}`: with the bytes it uses.
pub(super) async fn volume_info(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<VolumeInfo>, ApiFailure> {
    Ok(Json(engine.volume_info(&name).await?))
}

/// `DELETE /v1/volumes/{name}`: `204`; `409` naming the instance while it is attached.
pub(super) async fn remove_volume(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    detached(async move { engine.remove_volume(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/volumes/{name}/attach` ([`AttachVolume`]): `409` naming the holder when
/// another instance holds it, or when the instance is not stopped.
pub(super) async fn attach_volume(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<VolumeInfo>, ApiFailure> {
    let body: AttachVolume = json_body(req.into_body()).await?;
    let info = detached(async move { engine.attach_volume(&name, body).await }).await?;
    Ok(Json(info))
}

/// `POST /v1/volumes/{name}/detach` ([`DetachVolume`]).
pub(super) async fn detach_volume(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<VolumeInfo>, ApiFailure> {
    let body: DetachVolume = json_body(req.into_body()).await?;
    let info = detached(async move { engine.detach_volume(&name, body).await }).await?;
    Ok(Json(info))
}
