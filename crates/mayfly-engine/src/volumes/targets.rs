//! Where a volume may be mounted inside an instance.
//!
//! The path is only checked here for what can be refused up front (absolute, no `..`, not
//! where mayfly mounts its own filesystems, not twice, not one inside another); the forker resolves it inside the
//! instance's root (`RESOLVE_IN_ROOT`), so a symbolic link the tenant planted on the way
//! cannot lead the mount out of the root.

use std::collections::HashSet;

use mayfly_api::VolumeMount;

use crate::EngineError;

/// Mount points mayfly owns inside an instance: a volume is not mounted on or below them.
/// `/run` is a tmpfs mayfly mounts in an instance that boots an init (before the volumes, on
/// another filesystem, which the forker's `RESOLVE_NO_XDEV` refuses to cross), and holds
/// `/run/mayfly`.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run"];

/// The hint of a refused target.
const HINT: &str = "give an absolute path of a directory of your own, e.g. `/srv/data`";

/// Checks one target path; returns it normalised (no trailing or doubled `/`, no `.`).
pub(crate) fn check_target(volume: &str, path: &str) -> Result<String, EngineError> {
    let bad = |why: &str| {
        EngineError::invalid(
            format!("volume `{volume}` cannot be mounted at `{path}`: {why}"),
            HINT,
        )
    };
    if !path.starts_with('/') {
        return Err(bad("the path must be absolute"));
    }
    if path.len() > 4096 || path.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err(bad("the path is too long or holds control characters"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("`..` is not allowed in the path")),
            p if p.len() > 255 => return Err(bad("a component is longer than 255 bytes")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("a volume cannot replace the root"));
    }
    let norm = format!("/{}", parts.join("/"));
    for r in RESERVED {
        if norm == *r || norm.starts_with(&format!("{r}/")) {
            return Err(bad(&if *r == "/run" {
                "mayfly mounts /run itself (a tmpfs in a system container, holding /run/mayfly)"
                    .to_owned()
            } else {
                format!("mayfly mounts {r} itself")
            }));
        }
    }
    Ok(norm)
}

/// Checks a list of mounts of one instance (each path, and no path or volume twice);
/// returns them with normalised paths.
pub(crate) fn check_mounts(mounts: &[VolumeMount]) -> Result<Vec<VolumeMount>, EngineError> {
    let mut paths = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let path = check_target(&m.volume, &m.path)?;
        if !names.insert(m.volume.clone()) {
            return Err(EngineError::invalid(
                format!("volume `{}` is given twice", m.volume),
                "a volume is mounted at one path of one instance",
            ));
        }
        if !paths.insert(path.clone()) {
            return Err(EngineError::invalid(
                format!("two volumes are mounted at `{path}`"),
                "give each volume its own path",
            ));
        }
        out.push(VolumeMount {
            volume: m.volume.clone(),
            path,
            readonly: m.readonly,
        });
    }
    for outer in &out {
        for inner in &out {
            if inner.path.starts_with(&format!("{}/", outer.path)) {
                return Err(EngineError::invalid(
                    format!(
                        "volume `{}` at `{}` would be inside volume `{}` at `{}`",
                        inner.volume, inner.path, outer.volume, outer.path
                    ),
                    "mount volumes at paths that do not contain one another, e.g. `/srv/db` and `/srv/wal`",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_without_dotdot_and_outside_mayflys_mounts() {
        assert_eq!(check_target("v", "/srv//data/./").unwrap(), "/srv/data");
        assert_eq!(check_target("v", "/runx").unwrap(), "/runx");
        assert_eq!(check_target("v", "/devices").unwrap(), "/devices");
        for bad in [
            "/",
            "//",
            "srv/data",
            "/srv/../etc",
            "/proc",
            "/proc/1",
            "/sys/fs",
            "/dev",
            "/dev/shm",
            "/run",
            "/run/",
            "/run/app",
            "/run/mayfly",
            "/run/mayfly/x",
            "/a\nb",
        ] {
            let e = check_target("v", bad).unwrap_err().to_string();
            assert!(e.contains("volume `v`"), "{bad}: {e}");
        }
    }

    #[test]
    fn one_instance_mounts_each_volume_once_at_distinct_paths() {
        let m = |v: &str, p: &str| VolumeMount {
            volume: v.into(),
            path: p.into(),
            readonly: false,
        };
        assert!(check_mounts(&[m("a", "/a"), m("b", "/b")]).is_ok());
        assert!(check_mounts(&[m("a", "/a"), m("b", "/a/")]).is_err());
        assert!(check_mounts(&[m("a", "/a"), m("a", "/b")]).is_err());
        // One inside another, in either order; a shared name prefix is not nesting.
        assert!(check_mounts(&[m("db", "/var/lib/db"), m("wal", "/var/lib/dbwal")]).is_ok());
        for pair in [
            [m("db", "/var/lib/db"), m("wal", "/var/lib/db/wal")],
            [m("wal", "/var/lib/db//wal/"), m("db", "/var/lib/db")],
        ] {
            let e = check_mounts(&pair).unwrap_err().to_string();
            assert!(e.contains("inside volume `db`"), "{e}");
        }
    }
}
