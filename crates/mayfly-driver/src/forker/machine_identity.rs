//! A cloned instance's own machine identity, given inside its root before its init runs
//! (`InstanceSpec::regenerate_identity`): its machine id, SSH host keys, random seeds and
//! hostname.

use super::child::{ChildFailure, ChildResult, Step};

/// Gives a cloned instance its own machine identity, inside its root, before its init runs:
/// a new `/etc/machine-id` (and D-Bus's copy), new SSH host keys (old ones removed and, where
/// `ssh-keygen` exists, regenerated), fresh random seeds, and `/etc/hostname`. Clones that
/// share these confuse DHCP servers, journald, SSH clients and RNG-seeded services (a bug
/// class seen in Firecracker, LXD and systemd).
///
/// The machine id mayfly mounts over `/etc/machine-id` (the engine keeps one per instance, so a
/// clone's is new already) is the one taken, and copied to D-Bus's file; a random one is
/// drawn only where no such mount is there.
pub(crate) fn regenerate_identity(hostname: &str) -> ChildResult<()> {
    let machine_id = match provided_machine_id() {
        Some(id) => id,
        None => {
            let mut bytes = [0u8; 16];
            rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
                .step(|| "read random bytes".into())?;
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let is_file = |p: &str| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
    for file in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if is_file(file) {
            std::fs::write(file, format!("{machine_id}\n")).step(|| format!("write {file}"))?;
        }
    }
    if is_file("/etc/hostname") {
        std::fs::write("/etc/hostname", format!("{hostname}\n"))
            .step(|| "write /etc/hostname".into())?;
    }
    let mut removed_keys = false;
    if let Ok(entries) = std::fs::read_dir("/etc/ssh") {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("ssh_host_")
                && (name.ends_with("_key") || name.ends_with("_key.pub"))
            {
                std::fs::remove_file(e.path()).step(|| format!("remove /etc/ssh/{name}"))?;
                removed_keys = true;
            }
        }
    }
    if removed_keys {
        for keygen in ["/usr/bin/ssh-keygen", "/bin/ssh-keygen"] {
            if std::fs::metadata(keygen).is_ok() {
                let status = std::process::Command::new(keygen)
                    .arg("-A")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .env_clear()
                    .env("PATH", crate::DEFAULT_PATH)
                    .status()
                    .step(|| format!("run {keygen} -A"))?;
                if !status.success() {
                    return Err(ChildFailure {
                        step: format!("run {keygen} -A"),
                        errno: None,
                        detail: format!("it failed ({status})"),
                    });
                }
                break;
            }
        }
    }
    for seed in [
        "/var/lib/systemd/random-seed",
        "/var/lib/urandom/random-seed",
    ] {
        if is_file(seed) {
            let mut fresh = vec![0u8; 512];
            rustix::rand::getrandom(&mut fresh, rustix::rand::GetRandomFlags::empty())
                .step(|| "read random bytes".into())?;
            std::fs::write(seed, fresh).step(|| format!("write {seed}"))?;
        }
    }
    Ok(())
}

/// The machine id in `/etc/machine-id` when it is a mount of its own (mayfly's per-instance
/// file) holding a valid id.
fn provided_machine_id() -> Option<String> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        "/etc/machine-id",
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::TYPE,
    )
    .ok()?;
    let root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    if !st.stx_attributes_mask.contains(root) || !st.stx_attributes.contains(root) {
        return None;
    }
    let text = std::fs::read_to_string("/etc/machine-id").ok()?;
    let id = text.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}
