//! REST handlers of resources: flavors (`/v1/flavors`), live limit changes
//! (`PATCH /v1/instances/{name}/limits`), pause and resume, and usage (`/v1/stats`). As in
//! [`super::api`], each parses and validates its request, calls one engine action, and answers
//! its result or its error (through [`ApiFailure`]). Values are read by the one parser of
//! limits ([`mayfly_api::Limits::set_key`]), so the API refuses what the CLI refuses, with the
//! same message.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use mayfly_api::{
    CreateFlavor, FlavorInfo, InstanceInfo, InstanceStats, Limits, SetLimits, SetOutcome,
    StatsQuery, names::check_instance_name,
};
use mayfly_engine::Engine;

use super::api::{ApiFailure, bad_request, detached, json_body, query};

type AppState = Arc<Engine>;

/// Most instances one `GET /v1/stats` may name.
const MAX_STATS_NAMES: usize = 4096;

/// `GET /v1/flavors`: every flavor, built-in ones first.
pub(super) async fn list_flavors(
    State(engine): State<AppState>,
) -> Result<Json<Vec<FlavorInfo>>, ApiFailure> {
    Ok(Json(engine.list_flavors().await?))
}

/// `POST /v1/flavors` ([`CreateFlavor`]): `201` with the new flavor; `409` when the name is
/// taken (built-in flavors included).
pub(super) async fn create_flavor(
    State(engine): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<FlavorInfo>), ApiFailure> {
    let body: CreateFlavor = json_body(req.into_body()).await?;
    check_instance_name(&body.name).map_err(|why| {
        bad_request(
            why.replace("instance name", "flavor name"),
            "a flavor name is a lowercase DNS label, e.g. `web-small`",
        )
    })?;
    if body.name == "none" {
        return Err(bad_request(
            "`none` cannot be a flavor's name: `mayfly set NAME --flavor none` drops a flavor",
            "choose another name",
        ));
    }
    if body.limits.is_empty() {
        return Err(bad_request(
            format!("flavor `{}` holds no limit", body.name),
            "give at least one limit, e.g. `mayfly flavor create NAME --cpus 1 --memory 1G` \
             (see `mayfly flavor create --help`)",
        ));
    }
    body.limits.check().map_err(|why| {
        bad_request(
            format!("flavor `{}`: {why}", body.name),
            "see `mayfly flavor create --help` for each limit's forms",
        )
    })?;
    let info = detached(async move { engine.create_flavor(body).await }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/flavors/{name}`.
pub(super) async fn flavor_info(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlavorInfo>, ApiFailure> {
    Ok(Json(engine.flavor_info(&name).await?))
}

/// `DELETE /v1/flavors/{name}`: `204`; `409` for a built-in flavor or one instances use.
pub(super) async fn remove_flavor(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    detached(async move { engine.remove_flavor(&name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the changes of a [`SetLimits`] on their own (each value's form, something to do):
/// a typo is a 400 before the engine looks at the instance.
fn check_changes(req: &SetLimits) -> Result<(), ApiFailure> {
    if req.changes.is_empty() && req.flavor.is_none() {
        return Err(bad_request(
            "nothing to change: no KEY=VALUE and no flavor",
            format!(
                "give changes such as `memory=1G cpus=2` (keys: {}), or --flavor",
                mayfly_api::LIMIT_KEYS.join(", ")
            ),
        ));
    }
    let mut scratch = Limits::default();
    for (key, value) in &req.changes {
        scratch
            .set_key(key, value)
            .map_err(|why| bad_request(why, "see `mayfly set --help` for each limit's forms"))?;
    }
    Ok(())
}

/// `PATCH /v1/instances/{name}/limits` ([`SetLimits`]): `200` with what applied now and what
/// at the next start.
pub(super) async fn set_limits(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<SetOutcome>, ApiFailure> {
    let body: SetLimits = json_body(req.into_body()).await?;
    check_changes(&body)?;
    Ok(Json(
        detached(async move { engine.set_limits(&name, body).await }).await?,
    ))
}

/// `POST /v1/instances/{name}/pause`: `200` with the instance (`note`: `already paused` when
/// there was nothing to do).
pub(super) async fn pause_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<InstanceInfo>, ApiFailure> {
    Ok(Json(
        detached(async move { engine.pause_instance(&name).await }).await?,
    ))
}

/// `POST /v1/instances/{name}/resume`: `200` with the instance (`note` when it was not
/// paused).
pub(super) async fn resume_instance(
    State(engine): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<InstanceInfo>, ApiFailure> {
    Ok(Json(
        detached(async move { engine.resume_instance(&name).await }).await?,
    ))
}

/// The names of `?instances=a,b` (empty: every running instance).
fn stats_names(q: &StatsQuery) -> Result<Vec<String>, ApiFailure> {
    let names: Vec<String> = q
        .instances
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() > MAX_STATS_NAMES {
        return Err(bad_request(
            format!(
                "{} instances named; at most {MAX_STATS_NAMES} at once",
                names.len()
            ),
            "name fewer, or none for every running instance",
        ));
    }
    for name in &names {
        check_instance_name(name)
            .map_err(|why| bad_request(why, "give instance names as `mayfly list` shows them"))?;
    }
    Ok(names)
}

/// `GET /v1/stats?instances=a,b`: usage of the named instances (every running one without
/// names).
pub(super) async fn stats(
    State(engine): State<AppState>,
    req: Request,
) -> Result<Json<Vec<InstanceStats>>, ApiFailure> {
    let q: StatsQuery = query(req.uri())?;
    let names = stats_names(&q)?;
    Ok(Json(engine.stats(names).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(changes: &[(&str, &str)], flavor: Option<&str>) -> SetLimits {
        SetLimits {
            flavor: flavor.map(str::to_owned),
            changes: changes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn message(failure: ApiFailure) -> String {
        assert_eq!(failure.0.code, mayfly_api::ErrorCode::InvalidArgument);
        failure.0.message
    }

    #[test]
    fn changes_are_read_by_the_limits_parser() {
        assert!(check_changes(&set(&[("memory", "1G"), ("cpu_weight", "5")], None)).is_ok());
        assert!(check_changes(&set(&[], Some("small"))).is_ok());
        assert!(check_changes(&set(&[], Some(""))).is_ok());
        assert!(check_changes(&set(&[("memory", "none")], None)).is_ok());
        let m = message(check_changes(&set(&[("memory", "12XB")], None)).unwrap_err());
        assert_eq!(
            m,
            "invalid --memory `12XB`: unknown unit (e.g. 512M, 2GiB, 1.5G; K/M/G/T are powers \
             of 1024)"
        );
        let m = message(check_changes(&set(&[("ram", "1G")], None)).unwrap_err());
        assert!(m.starts_with("unknown limit `ram`"), "{m}");
        let m = message(check_changes(&set(&[], None)).unwrap_err());
        assert!(m.starts_with("nothing to change"), "{m}");
    }

    #[test]
    fn stats_names_split_and_check() {
        let q = |s: Option<&str>| StatsQuery {
            instances: s.map(str::to_owned),
        };
        assert!(stats_names(&q(None)).unwrap().is_empty());
        assert!(stats_names(&q(Some(""))).unwrap().is_empty());
        assert_eq!(
            stats_names(&q(Some("a, b,,c"))).unwrap(),
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]
        );
        let m = message(stats_names(&q(Some("a,Bad_Name"))).unwrap_err());
        assert!(m.contains("invalid instance name `Bad_Name`"), "{m}");
        let many = vec!["a"; MAX_STATS_NAMES + 1].join(",");
        let m = message(stats_names(&q(Some(&many))).unwrap_err());
        assert!(m.contains("at most"), "{m}");
    }
}
