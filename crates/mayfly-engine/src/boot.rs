//! OS templates that boot: what `template build NAME --debian SUITE` adds so that an instance
//! of it boots systemd (unless `--no-init`).
//!
//! - `systemd-sysv` (systemd as `/sbin/init`, which makes the template's default command
//!   `/sbin/init`) and `dbus` (for `loginctl`, `hostnamectl`, `timedatectl`), installed by
//!   debootstrap with the variant;
//! - the units that cannot work in any mayfly instance masked, as Debian's and systemd's own
//!   container practice does ([`MASKED_UNITS`], listed in docs/boot.md). Everything else that
//!   cannot work in a container is skipped by systemd itself (`ConditionVirtualization=`,
//!   `ConditionPathIsReadWrite=/sys`, capabilities it lacks).

use std::path::Path;

use crate::EngineError;
use crate::error::io_err;

/// The packages an OS template gets for its init.
pub(crate) const INIT_PACKAGES: [&str; 2] = ["systemd-sysv", "dbus"];

/// Units masked in a booting OS template, with why.
pub(crate) const MASKED_UNITS: [(&str, &str); 1] = [(
    "systemd-machine-id-commit.service",
    "mayfly mounts the instance's own /etc/machine-id at every start; committing it to the root \
     would need CAP_SYS_ADMIN, and fails",
)];

/// Adds [`INIT_PACKAGES`] to `packages` (those not there yet).
pub(crate) fn add_init_packages(packages: &mut Vec<String>) {
    for p in INIT_PACKAGES {
        if !packages.iter().any(|x| x == p) {
            packages.push(p.to_owned());
        }
    }
}

/// Masks [`MASKED_UNITS`] in the root filesystem `root` (those its systemd has), as
/// `systemctl mask` does: a link to `/dev/null` in `/etc/systemd/system`, and empties the
/// machine id systemd's installation drew on the build host (as Debian's container images
/// ship it): every instance gets its own mounted over it, and a published or exported
/// template must not carry one. Returns the units masked. Blocking.
pub(crate) fn mask_units(root: &Path) -> Result<Vec<String>, EngineError> {
    let machine_id = root.join("etc/machine-id");
    if std::fs::symlink_metadata(&machine_id).is_ok_and(|m| m.file_type().is_file()) {
        std::fs::write(&machine_id, b"").map_err(io_err("empty", &machine_id))?;
    }
    let mut masked = Vec::new();
    let dir = root.join("etc/systemd/system");
    for (unit, _) in MASKED_UNITS {
        let shipped = ["lib/systemd/system", "usr/lib/systemd/system"]
            .iter()
            .any(|d| root.join(d).join(unit).exists());
        if !shipped {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let link = dir.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err("create", &link))?;
        masked.push(unit.to_owned());
    }
    Ok(masked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shipped_units_are_masked_and_packages_are_added_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert!(mask_units(root).unwrap().is_empty());
        assert!(!root.join("etc/systemd/system").exists());
        std::fs::create_dir_all(root.join("lib/systemd/system")).unwrap();
        std::fs::write(
            root.join("lib/systemd/system/systemd-machine-id-commit.service"),
            "",
        )
        .unwrap();
        assert_eq!(
            mask_units(root).unwrap(),
            ["systemd-machine-id-commit.service"]
        );
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        mask_units(root).unwrap();
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        let link = root.join("etc/systemd/system/systemd-machine-id-commit.service");
        assert_eq!(std::fs::read_link(link).unwrap(), Path::new("/dev/null"));
        let mut p = vec!["dbus".to_owned(), "less".to_owned()];
        add_init_packages(&mut p);
        assert_eq!(p, ["dbus", "less", "systemd-sysv"]);
    }
}
