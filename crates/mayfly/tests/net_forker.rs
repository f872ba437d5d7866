//! The forker driven through the container driver, without a daemon: it gives an instance its
//! network interfaces before its init runs, and a failure to do so fails the start cleanly
//! (issue 21; that forker runs in a network namespace of the test's own: nothing here touches
//! the host's network); and it tells a late release of an ended run from the end of the next.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::forker_bench::{ForkerBench, Layout, Sweep, wait_for};
use mayfly_driver::{Driver, InitStdio, InstanceSpec, NetworkMode, ProcessSpec};

const BRIDGE: &str = "mf-7e57000000a1";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One interface on the test's bridge, as JSON (the spec's type is mayfly-net's).
fn interface(host_name: &str, ipv4: &str, gateway: &str) -> serde_json::Value {
    serde_json::json!({
        "network": "lan",
        "bridge": BRIDGE,
        "host_name": host_name,
        "name": "eth0",
        "mac": "02:7e:57:00:00:02",
        "ipv4": ipv4,
        "prefix": 24,
        "gateway": gateway,
        "isolated": false,
    })
}

fn spec(state: &Path, layer: &Path, id: &str, interfaces: serde_json::Value) -> InstanceSpec {
    let dir = state.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    InstanceSpec {
        id: id.to_owned(),
        hostname: id.to_owned(),
        layers: vec![layer.to_owned()],
        instance_dir: dir.clone(),
        writable: dir.join("upper"),
        new_identity: false,
        network: NetworkMode::Isolated,
        interfaces: serde_json::from_value(interfaces).unwrap(),
        binds: vec![],
        idmap: None,
        process: ProcessSpec {
            args: vec!["sleep".into(), "60".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            tty: false,
        },
        init: false,
        limits: Default::default(),
        user_data: None,
    }
}

fn host_ends() -> Vec<String> {
    sh(&["ip", "-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| n.starts_with("mv"))
        .collect()
}

/// What a forker test works with (see `common/forker_bench.rs`): its cgroups are under
/// `mayfly-<name>-<pid>`.
type Bench = ForkerBench;

impl ForkerBench {
    /// A bench whose cgroups are under `mayfly-<name>-<pid>`.
    fn new(name: &str) -> Bench {
        Self::create(name, Layout::Plain, Sweep::Remove)
    }

    /// Starts container `id` (`sleep 60`) with `interfaces` (JSON).
    fn start(
        &self,
        id: &str,
        interfaces: serde_json::Value,
    ) -> Result<mayfly_driver::Started, mayfly_driver::DriverError> {
        let s = spec(&self.state, &self.layer, id, interfaces);
        self.driver.prepare_writable(&s, &self.trash).unwrap();
        self.rt
            .block_on(self.driver.start(s, InitStdio::Log { max_bytes: 1 << 20 }))
    }
}

#[test]
fn the_forker_attaches_interfaces_before_the_init_and_a_failure_leaves_nothing() {
    mayfly_sys::process::unshare_network_namespace().expect("a network namespace of our own");
    mayfly_sys::net::loopback_up().unwrap();
    sh(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
    sh(&["ip", "addr", "add", "10.77.0.1/24", "dev", BRIDGE]);
    sh(&["ip", "link", "set", BRIDGE, "up"]);
    let b = Bench::new("nettest");

    let started = b
        .start(
            "nettest-a",
            serde_json::json!([interface("mv7e5700000a10", "10.77.0.2", "10.77.0.1")]),
        )
        .expect("start with an interface");
    let ns = format!("--net=/proc/{}/ns/net", started.pid);
    let inside = sh(&["nsenter", &ns, "ip", "-o", "addr"]);
    assert!(inside.contains("eth0    inet 10.77.0.2/24"), "{inside}");
    let route = sh(&["nsenter", &ns, "ip", "route"]);
    assert!(route.contains("default via 10.77.0.1 dev eth0"), "{route}");
    let ping = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", "10.77.0.2"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "the instance does not answer on the bridge"
    );
    assert_eq!(host_ends(), ["mv7e5700000a10"]);

    // A gateway outside the subnet: the interface cannot be completed.
    let err = b
        .start(
            "nettest-b",
            serde_json::json!([interface("mv7e5700000b10", "10.77.0.3", "192.0.2.1")]),
        )
        .expect_err("a start whose interface fails");
    let msg = mayfly_driver::error_chain(&err);
    assert!(msg.contains("eth0") && msg.contains("network lan"), "{msg}");
    assert_eq!(
        host_ends(),
        ["mv7e5700000a10"],
        "the failed start left a veth"
    );
    let _ = b.rt.block_on(b.driver.release("nettest-b"));

    b.rt.block_on(b.driver.kill("nettest-a")).unwrap();
    wait_for("the instance to end", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{}", started.pid)).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", started.pid))
                .is_ok_and(|s| s.contains(") Z "))
    });
    wait_for("the host end to go", Duration::from_secs(10), || {
        host_ends().is_empty()
    });
    let _ = b.rt.block_on(b.driver.release("nettest-a"));
}

/// A daemon starting up while a run ends can hear of that end twice (from the forker's state
/// and from its event); if the second report comes after the next run started, releasing the
/// container must not end that next run: the forker answers `StillRunning`, which the engine
/// takes as a late report (slot.rs, `finish_run`).
#[test]
fn a_release_that_comes_after_the_next_run_started_is_answered_still_running() {
    let mut b = Bench::new("runtest");
    let id = "runtest-a";
    let ended = |b: &mut Bench| {
        let events = &mut b.events;
        b.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(e) = events.recv().await {
                    if matches!(e, mayfly_driver::DriverEvent::Exited { ref id, .. } if id == "runtest-a") {
                        return;
                    }
                }
            })
            .await
            .expect("the end of the run is reported");
        });
    };

    b.start(id, serde_json::json!([])).expect("start");
    b.rt.block_on(b.driver.kill(id)).unwrap();
    ended(&mut b);
    b.rt.block_on(b.driver.release(id))
        .expect("the ended run is released");

    // The next run, then the late second release of the first one.
    b.start(id, serde_json::json!([])).expect("start again");
    let err =
        b.rt.block_on(b.driver.release(id))
            .expect_err("a release while the container runs");
    assert_eq!(
        err.failure_kind(),
        Some(mayfly_driver::FailureKind::StillRunning),
        "{}",
        mayfly_driver::error_chain(&err)
    );
    b.rt.block_on(b.driver.kill(id)).unwrap();
    ended(&mut b);
    b.rt.block_on(b.driver.release(id))
        .expect("the second run is released");
}
