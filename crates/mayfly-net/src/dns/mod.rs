//! Instance names: one dnsmasq per network, started by the daemon in its own session so that
//! it outlives the daemon (names keep resolving while it restarts).
//!
//! Everything of a network's name server lives in its directory (`<state_dir>/net/<name>/`):
//! `dnsmasq.conf`, `dnsmasq.pid`, `start.log` (what the last start said) and `hosts/`, one
//! file per instance (named by its id) that dnsmasq watches (`hostsdir=`, inotify): a record
//! is there within moments of the file's atomic replacement or removal, with no signal.
//! dnsmasq listens on the gateway address only, answers `NAME` and `NAME.mayfly` with a TTL of
//! 1 s, and forwards other names (with a dot) to the network's upstream servers or the host's
//! `/etc/resolv.conf`. A process is ours when its command line holds our
//! `--conf-file=<dir>/dnsmasq.conf`.

mod process;

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{NetError, NetworkPlan, Result};

/// The domain instance names live in.
pub const DOMAIN: &str = "mayfly";

/// The configuration file's name in a network's directory.
pub const CONF: &str = "dnsmasq.conf";
const PID: &str = "dnsmasq.pid";
const HOSTS: &str = "hosts";
const START_LOG: &str = "start.log";

fn io(what: String) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Io { what, source }
}

/// The `--conf-file=…` argument that names the dnsmasq of `dir`.
pub fn conf_arg(dir: &Path) -> String {
    format!("--conf-file={}", dir.join(CONF).display())
}

/// Makes sure the name server of `plan` runs from `dir` with the configuration the plan
/// gives: adopts a live one whose configuration is current, restarts one whose
/// configuration changed, starts one otherwise. Idempotent.
pub fn ensure_running(plan: &NetworkPlan, dir: &Path) -> Result<()> {
    let parent = dir.parent().map(Path::to_path_buf);
    for d in parent
        .into_iter()
        .chain([dir.to_path_buf(), dir.join(HOSTS)])
    {
        std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        // dnsmasq reads the hosts files after dropping its privileges.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("set the mode of {}", d.display())))?;
    }
    let user = process::run_as(&dir.join(HOSTS));
    let conf = render_conf(plan, dir, &user);
    let conf_path = dir.join(CONF);
    let current = std::fs::read_to_string(&conf_path).ok();
    let same_conf = current.as_deref() == Some(conf.as_str());
    // The common case (every instance start): the pid file names a live server of this
    // configuration; no walk of /proc.
    if same_conf && process::from_pid_file(dir).is_some() {
        return Ok(());
    }
    let running = process::find(dir);
    if same_conf && !running.is_empty() {
        return Ok(());
    }
    process::kill_all(dir, &running)?;
    write_atomic(&conf_path, conf.as_bytes(), 0o644)?;
    process::start(dir, &plan.name)
}

/// Stops the name server of `dir` (every process whose command line names its
/// configuration) and removes the directory. Idempotent.
pub fn stop(dir: &Path) -> Result<()> {
    let running = process::find(dir);
    process::kill_all(dir, &running)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Records that instance `key` (its id) answers to `name` and `name.mayfly` at `ipv4` (A)
/// and at `ipv6` when it has one (AAAA).
pub fn set_host(
    dir: &Path,
    key: &str,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    name: &str,
) -> Result<()> {
    check_key(key)?;
    if name.is_empty()
        || name.len() > 63
        || name.starts_with('-')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(NetError::Invalid(format!(
            "`{name}` cannot be a DNS name: use letters, digits and `-` (at most 63)"
        )));
    }
    let hosts = dir.join(HOSTS);
    if !hosts.is_dir() {
        std::fs::create_dir_all(&hosts).map_err(io(format!("create {}", hosts.display())))?;
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("set the mode of {}", hosts.display())))?;
    }
    let mut lines = format!("{ipv4} {name} {name}.{DOMAIN}\n");
    if let Some(ipv6) = ipv6 {
        lines.push_str(&format!("{ipv6} {name} {name}.{DOMAIN}\n"));
    }
    write_atomic(&hosts.join(key), lines.as_bytes(), 0o644)
}

/// Forgets instance `key`'s name. Idempotent.
pub fn remove_host(dir: &Path, key: &str) -> Result<()> {
    check_key(key)?;
    let path = dir.join(HOSTS).join(key);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The keys (instance ids) that have a name recorded.
pub fn host_keys(dir: &Path) -> Result<Vec<String>> {
    let hosts = dir.join(HOSTS);
    let entries = match std::fs::read_dir(&hosts) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("list {}", hosts.display()))(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", hosts.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            keys.push(name);
        }
    }
    keys.sort();
    Ok(keys)
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > 128
        || key.starts_with('.')
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NetError::Invalid(format!(
            "`{key}` cannot name a host record: use letters, digits, `-` and `_`"
        )));
    }
    Ok(())
}

/// Writes `path` whole or not at all: a dot file beside it (which dnsmasq ignores), renamed
/// over it.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(format!("replace {}", path.display())))
}

/// dnsmasq's configuration for `plan`, run from `dir` as `user`.
pub fn render_conf(plan: &NetworkPlan, dir: &Path, user: &str) -> String {
    let mut c = String::new();
    c.push_str(&format!(
        "# mayfly: the name server of network `{}` (written by mayfly; changes are lost)\n",
        plan.name
    ));
    c.push_str(&format!("pid-file={}\n", dir.join(PID).display()));
    c.push_str(&format!("user={user}\n"));
    // Only the gateway address, bound as it comes and goes (the bridge may be recreated
    // under a running server).
    c.push_str(&format!("listen-address={}\n", plan.gateway));
    if let Some(gateway6) = plan.gateway6() {
        c.push_str(&format!("listen-address={gateway6}\n"));
    }
    c.push_str("bind-dynamic\n");
    c.push_str("no-hosts\n");
    c.push_str(&format!("hostsdir={}\n", dir.join(HOSTS).display()));
    c.push_str("local-ttl=1\n");
    c.push_str("no-negcache\n");
    // Instance names are answered here or not at all; bare names never go upstream.
    c.push_str(&format!("local=/{DOMAIN}/\n"));
    c.push_str("domain-needed\n");
    if plan.upstream.is_empty() {
        c.push_str("resolv-file=/etc/resolv.conf\n");
    } else {
        c.push_str("no-resolv\n");
        for server in &plan.upstream {
            c.push_str(&format!("server={server}\n"));
        }
    }
    c.push_str(
        "# DHCP (the VM driver's guests) goes here: dhcp-range=<subnet>,static and\n\
         # dhcp-hostsdir=<this directory>/dhcp-hosts, one file per guest (MAC, address, name).\n",
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_the_gateway_only_and_forwards_as_asked() {
        let subnet: crate::Ipv4Net = "10.77.0.0/24".parse().unwrap();
        let mut plan = NetworkPlan {
            name: "web".into(),
            bridge: "mf-000000000001".into(),
            subnet,
            gateway: subnet.gateway(),
            isolated: false,
            nat: true,
            upstream: vec![],
            subnet6: None,
        };
        let dir = Path::new("/var/lib/mayfly/net/web");
        let c = render_conf(&plan, dir, "dnsmasq");
        let lines: Vec<&str> = c.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.contains(&"listen-address=10.77.0.1"));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("listen-address="))
                .count(),
            1
        );
        plan.subnet6 = Some("fd12:3456:789a::".parse().unwrap());
        let c = render_conf(&plan, dir, "dnsmasq");
        assert!(c.contains("listen-address=10.77.0.1\nlisten-address=fd12:3456:789a::1\n"));
        plan.subnet6 = None;
        assert!(lines.contains(&"hostsdir=/var/lib/mayfly/net/web/hosts"));
        assert!(lines.contains(&"local-ttl=1"));
        assert!(lines.contains(&"user=dnsmasq"));
        assert!(lines.contains(&"resolv-file=/etc/resolv.conf"));
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("server=") || l.starts_with("interface="))
        );
        assert!(!lines.iter().any(|l| l.starts_with("dhcp")), "no DHCP yet");
        plan.upstream = vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)];
        let c = render_conf(&plan, dir, "dnsmasq");
        assert!(c.contains("no-resolv\nserver=10.99.0.1\nserver=10.99.0.2\n"));
        assert_eq!(
            conf_arg(dir),
            "--conf-file=/var/lib/mayfly/net/web/dnsmasq.conf"
        );
    }

    #[test]
    fn host_records_are_files_named_by_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        set_host(dir, "abc123", Ipv4Addr::new(10, 77, 0, 2), None, "web").unwrap();
        set_host(dir, "def456", Ipv4Addr::new(10, 77, 0, 3), None, "db").unwrap();
        set_host(dir, "abc123", Ipv4Addr::new(10, 77, 0, 4), None, "www").unwrap();
        assert_eq!(host_keys(dir).unwrap(), ["abc123", "def456"]);
        let text = std::fs::read_to_string(dir.join("hosts/abc123")).unwrap();
        assert_eq!(text, "10.77.0.4 www www.mayfly\n");
        let v6: Ipv6Addr = "fd12:3456:789a::a4d:3".parse().unwrap();
        set_host(dir, "def456", Ipv4Addr::new(10, 77, 0, 3), Some(v6), "db").unwrap();
        let text = std::fs::read_to_string(dir.join("hosts/def456")).unwrap();
        assert_eq!(
            text,
            "10.77.0.3 db db.mayfly\nfd12:3456:789a::a4d:3 db db.mayfly\n"
        );
        remove_host(dir, "abc123").unwrap();
        remove_host(dir, "abc123").unwrap();
        assert_eq!(host_keys(dir).unwrap(), ["def456"]);
        for bad in ["", "a b", "x\n10.0.0.1 evil", "-x", &"a".repeat(64)] {
            assert!(
                set_host(dir, "k", Ipv4Addr::LOCALHOST, None, bad).is_err(),
                "{bad:?}"
            );
        }
        for bad in ["", "../x", ".hidden", "a/b"] {
            assert!(
                set_host(dir, bad, Ipv4Addr::LOCALHOST, None, "ok").is_err(),
                "{bad:?}"
            );
        }
    }
}
