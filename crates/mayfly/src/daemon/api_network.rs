//! REST handlers of networks, channels and renames: `/v1/networks`, `/v1/channels` and
//! `/v1/instances/{name}/rename`. As in [`super::api`], each parses and validates its request,
//! calls one engine action, and answers its result or its error (through [`ApiFailure`]).

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use mayfly_api::{
    ChannelInfo, CreateChannel, CreateNetwork, InstanceInfo, NetworkInfo, RenameRequest,
    check_network_name,
};
use mayfly_engine::Engine;

use super::api::{ApiFailure, bad_request, detached, json_body};

type AppState = Arc<Engine>;

/// A name a network or a channel may have, or a 400 that says which names are.
fn valid_name(what: &str, name: &str) -> Result<(), ApiFailure> {
    check_network_name(name).map_err(|why| {
        bad_request(
            why.replace("network name", &format!("{what} name")),
            format!("a {what} name is a lowercase DNS label, e.g. `backend`"),
        )
    })
}

/// `GET /v1/networks`.
pub(super) async fn list_networks(
    State(engine): State<AppState>,
) -> Result<Json<Vec<NetworkInfo>>, ApiFailure> {
    Ok(Json(engine.networks().await?))
}

/// `POST /v1/networks` ([`CreateNetwork`]): `201` with the new network.
pub(super) async fn create_network(
    State(engine): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<NetworkInfo>), ApiFailure> {
    let body: CreateNetwork = json_body(req.into_body()).await?;
    valid_name("network", &body.name)?;
    if let Some(subnet) = &body.subnet {
        subnet.parse::<mayfly_net::Ipv4Net>().map_err(|e| {
            bad_request(
                format!("invalid subnet `{subnet}`: {e}"),
                "give ADDRESS/PREFIX with a prefix from /8 to /30 and no host bits, e.g. \
                 10.20.0.0/24 (or no subnet: mayfly picks a free one)",
            )
        })?;
    }
    for server in &body.dns_upstream {
        server.parse::<Ipv4Addr>().map_err(|_| {
            bad_request(
                format!("invalid name server `{server}`: not an IPv4 address"),
                "give each DNS upstream as an IPv4 address, e.g. 192.0.2.53",
            )
        })?;
    }
    let info = detached(async move { engine.create_network(body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/networks/{name}`.
pub(super) async fn network_info(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<NetworkInfo>, ApiFailure> {
    Ok(Json(engine.network_info(&name).await?))
}

/// `DELETE /v1/networks/{name}`: `204`; `409` while instances have an interface on it.
pub(super) async fn remove_network(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    detached(async move { engine.remove_network(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/channels`.
pub(super) async fn list_channels(
    State(engine): State<AppState>,
) -> Result<Json<Vec<ChannelInfo>>, ApiFailure> {
    Ok(Json(engine.channels().await?))
}

/// `POST /v1/channels` ([`CreateChannel`]): `201` with the new channel (its `note` says when
/// a running instance sees it only at its next start).
pub(super) async fn create_channel(
    State(engine): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<ChannelInfo>), ApiFailure> {
    let body: CreateChannel = json_body(req.into_body()).await?;
    valid_name("channel", &body.name)?;
    if body.server == body.client {
        return Err(bad_request(
            format!(
                "a channel joins two instances: `{}` is both its server and its client",
                body.server
            ),
            "give --server and --client different instances",
        ));
    }
    let info = detached(async move { engine.create_channel(body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `DELETE /v1/channels/{name}`: `204`.
pub(super) async fn remove_channel(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    detached(async move { engine.remove_channel(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/instances/{name}/rename` ([`RenameRequest`]): `200` with the renamed instance.
pub(super) async fn rename_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<InstanceInfo>, ApiFailure> {
    let body: RenameRequest = json_body(req.into_body()).await?;
    Ok(Json(
        detached(async move { engine.rename_instance(&name, &body.name).await }).await?,
    ))
}
