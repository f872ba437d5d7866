//! `/run/mayfly/meta.json`: what an instance is, written into `<instance dir>/run/mayfly/` at
//! each start and bound read-only at `/run/mayfly` (tenant writes fail with EROFS).

use std::path::Path;

use serde_json::json;

use super::StartContext;
use crate::EngineError;

/// The metadata of the start `ctx`, the instance being called `hostname`.
pub(super) fn build(ctx: &StartContext<'_>, hostname: &str) -> serde_json::Value {
    let rec = ctx.rec;
    let interfaces: Vec<serde_json::Value> = ctx
        .interfaces
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "network": i.network,
                "ipv4": format!("{}/{}", i.ipv4, i.prefix),
                "ipv6": i.ipv6.map(|a| a.to_string()),
                "mac": i.mac.to_string(),
            })
        })
        .collect();
    json!({
        "id": rec.id,
        "name": rec.name,
        "hostname": hostname,
        "template": format!("{}@{}", rec.template, ctx.version),
        "mode": rec.mode,
        "flavor": rec.config.flavor,
        "limits": ctx.limits,
        "interfaces": interfaces,
        "meta": rec.config.meta,
    })
}

/// Writes `meta` into `<dir>/run/mayfly/meta.json`; returns the bind that shows it.
pub(super) fn write(
    dir: &Path,
    meta: &serde_json::Value,
) -> Result<mayfly_driver::BindMount, EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let run = dir.join("run/mayfly");
    // Fresh at each start: the mount points of the last start's channels go with it.
    match std::fs::remove_dir_all(&run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::error::io_err("remove", &run)(e)),
    }
    std::fs::create_dir_all(&run).map_err(crate::error::io_err("create", &run))?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
        .map_err(crate::error::io_err("set the mode of", &run))?;
    let mut bytes = serde_json::to_vec_pretty(meta).unwrap_or_default();
    bytes.push(b'\n');
    super::write_private(&run.join("meta.json"), &bytes, 0o644)?;
    Ok(mayfly_driver::BindMount {
        source: run,
        target: mayfly_api::META_PATH
            .rsplit_once('/')
            .map_or("/run/mayfly", |(d, _)| d)
            .to_owned(),
        readonly: true,
        only_over_file: false,
    })
}
