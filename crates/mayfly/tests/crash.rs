//! The crash test: the daemon is killed (SIGKILL) at random moments of launch, stop, reset,
//! snapshot, restore, clone, publish, import, patch + rollout and rm, on instances with
//! enough data that copies take a while, and after every restart the state is checked:
//! - the daemon is ready within a few seconds (the worst start-up is reported);
//! - no instance is frozen, and none is left `starting` or `stopping`;
//! - every object is complete or absent: instance directories are exactly the catalogue's,
//!   every layer a template version names is there and no other, snapshot trees match the
//!   snapshots listed, `tmp/` is empty;
//! - data is intact: a persistent instance's 40 MB and 2,000 files check out, a restored
//!   instance holds its old content or its snapshot's, never a mix;
//! - nothing leaked: the cgroups are exactly the running instances', one forker, no mount.
//!
//! `MAYFLY_CRASH_ROUNDS` sets the number of kills (CI runs the default, 20; the figures in
//! docs/architecture.md come from 300), `MAYFLY_CRASH_SEED` replays a run (the seed is
//! printed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestDaemon, freezer_thawed, make_rootfs, poll_until};
use serde_json::Value;

/// xorshift64*: enough randomness to pick moments, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// What the catalogue holds now.
struct Seen {
    instances: Vec<Value>,
    templates: Vec<String>,
}

fn seen(d: &TestDaemon) -> Seen {
    let instances = array(&d.json(&["list", "--json"]));
    let templates = array(&d.json(&["template", "list", "--json"]))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    Seen {
        instances,
        templates,
    }
}

fn names_with(s: &Seen, prefix: &str) -> Vec<String> {
    s.instances
        .iter()
        .filter_map(|i| i["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The next operation to interrupt, given what exists: its kind (for the figures) and its
/// command line.
fn pick(rng: &mut Rng, s: &Seen, n: u64, import_dir: &str) -> (&'static str, Vec<String>) {
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let work = names_with(s, "w");
    let clones = names_with(s, "c");
    let published: Vec<&String> = s
        .templates
        .iter()
        .filter(|t| t.starts_with("pub"))
        .collect();
    let imported: Vec<&String> = s
        .templates
        .iter()
        .filter(|t| t.starts_with("imp"))
        .collect();
    // Keep the population small: remove before adding more.
    if work.len() > 4 {
        return ("rm", v(&["rm", "--force", &work[0]]));
    }
    if clones.len() > 2 {
        return ("rm", v(&["rm", "--force", &clones[0]]));
    }
    if published.len() > 2 {
        return ("template rm", v(&["template", "rm", published[0]]));
    }
    if imported.len() > 2 {
        return ("template rm", v(&["template", "rm", imported[0]]));
    }
    let running_work: Vec<&String> = work
        .iter()
        .filter(|w| {
            s.instances
                .iter()
                .any(|i| i["name"] == w.as_str() && i["state"] == "running")
        })
        .collect();
    let any_work = |rng: &mut Rng| -> Option<String> {
        let n = u64::try_from(running_work.len()).unwrap_or(0);
        (n > 0).then(|| running_work[usize::try_from(rng.below(n)).unwrap_or(0)].clone())
    };
    loop {
        let choice = rng.below(10);
        let op = match choice {
            0 => (
                "launch",
                v(&["launch", "busybox", "--name", &format!("w{n}")]),
            ),
            1 => match any_work(rng) {
                Some(w) => ("stop", v(&["stop", &w])),
                None => continue,
            },
            2 => match any_work(rng) {
                Some(w) => ("reset", v(&["reset", &w])),
                None => continue,
            },
            3 => (
                "snapshot",
                v(&["snapshot", "create", "keeper", &format!("s{n}")]),
            ),
            4 => ("restore", v(&["snapshot", "restore", "restorable", "s0"])),
            5 => ("clone", v(&["clone", "keeper", &format!("c{n}")])),
            6 => (
                "publish",
                v(&["publish", "keeper", "--as", &format!("pub{n}")]),
            ),
            7 => (
                "import",
                v(&["template", "import", &format!("imp{n}"), import_dir]),
            ),
            8 => (
                "patch",
                v(&[
                    "template",
                    "patch",
                    "busybox",
                    "--run",
                    &format!("echo {n} > /etc/stamp"),
                ]),
            ),
            _ => (
                "rollout",
                v(&["template", "rollout", "busybox", "--wave", "1"]),
            ),
        };
        return op;
    }
}

/// Waits (bounded) until no instance is in a passing state; returns the list.
fn settled(d: &TestDaemon) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = poll_until(Duration::from_secs(30), || {
        last = array(&d.json(&["list", "--json"]));
        last.iter()
            .all(|i| i["state"] == "running" || i["state"] == "stopped")
    });
    assert!(ok, "instances never settled: {last:?}\n{}", d.logs());
    last
}

/// Every check of the module documentation.
fn check(d: &TestDaemon, round: u64) {
    let instances = settled(d);
    let ids: BTreeSet<String> = instances
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    for i in &instances {
        let name = i["name"].as_str().unwrap_or_default();
        assert!(
            poll_until(Duration::from_secs(5), || freezer_thawed(d, name)),
            "round {round}: {name} is frozen"
        );
    }
    // Data.
    let keeper = d.info("keeper");
    assert_eq!(keeper["state"], "running", "round {round}: {keeper}");
    d.sh("keeper", "cd /root && sha256sum -c -s sum");
    let restorable = d.info("restorable");
    assert_eq!(
        restorable["state"], "running",
        "round {round}: {restorable}"
    );
    let v = d.sh("restorable", "cat /root/v");
    assert!(
        v == "s0\n" || v == "live\n",
        "round {round}: restorable holds {v:?}"
    );
    // Complete or absent.
    let dirs: BTreeSet<String> = d.state_entries("instances").into_iter().collect();
    assert_eq!(dirs, ids, "round {round}: instance directories");
    assert!(
        d.state_entries("tmp").is_empty(),
        "round {round}: tmp holds {:?}",
        d.state_entries("tmp")
    );
    let mut referenced = BTreeSet::new();
    for t in array(&d.json(&["template", "list", "--json"])) {
        let name = t["name"].as_str().unwrap_or_default().to_owned();
        let info = d.json(&["template", "info", &name, "--json"]);
        for version in array(&info["versions"]) {
            for digest in common::digests(&version) {
                referenced.insert(common::layer_dir_name(&digest));
            }
        }
    }
    let layers: BTreeSet<String> = d.state_entries("layers").into_iter().collect();
    assert!(
        referenced.is_subset(&layers),
        "round {round}: missing layers {:?}",
        referenced.difference(&layers).collect::<Vec<_>>()
    );
    assert_eq!(
        layers, referenced,
        "round {round}: layers without a version"
    );
    let mut snapshots = 0;
    for i in &instances {
        let name = i["name"].as_str().unwrap_or_default();
        snapshots += array(&d.json(&["snapshot", "list", name, "--json"])).len();
    }
    assert_eq!(
        d.state_entries("snapshots").len(),
        snapshots,
        "round {round}: snapshot trees"
    );
    // Leaks: the groups are the running instances' (both read afresh: work put back in the
    // background, such as an interrupted rollout's resets, may still be going on).
    let parent = d.cgroup_parent();
    let mut groups = BTreeSet::new();
    let mut running = BTreeSet::new();
    let same = poll_until(Duration::from_secs(20), || {
        running = array(&d.json(&["list", "--json"]))
            .iter()
            .filter(|i| i["state"] == "running")
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        groups = common::cgroup_present(&parent)
            .into_iter()
            .find(|p| {
                !p.starts_with("/sys/fs/cgroup/unified") && !p.starts_with("/sys/fs/cgroup/systemd")
            })
            .and_then(|p| std::fs::read_dir(p).ok())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        groups == running
    });
    assert!(
        same,
        "round {round}: cgroups {groups:?}, running {running:?}"
    );
    assert_eq!(d.forker_processes().len(), 1, "round {round}: one forker");
    let dir = format!("{}/", d.dir.display());
    assert!(
        common::mounts_mentioning(&dir).is_empty(),
        "round {round}: mounts"
    );
}

#[test]
fn the_daemon_killed_at_random_moments_always_restarts_ready_and_consistent() {
    let rounds = env_u64("MAYFLY_CRASH_ROUNDS").unwrap_or(20);
    let seed = env_u64("MAYFLY_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |t| u64::from(t.subsec_nanos()) | 1)
    });
    eprintln!("crash test: seed {seed}, {rounds} rounds (MAYFLY_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut d = TestDaemon::start();

    d.ok(&["launch", "busybox", "--name", "keeper", "--persistent"]);
    d.sh(
        "keeper",
        "mkdir /root/many && cd /root/many && i=0; while [ $i -lt 2000 ]; do echo $i > f$i; i=$((i+1)); done; \
         head -c 40000000 /dev/urandom > /root/big; cd /root && find many big -type f | sort | xargs sha256sum > /root/sum",
    );
    d.ok(&["launch", "busybox", "--name", "restorable", "--persistent"]);
    d.sh("restorable", "echo s0 > /root/v");
    d.ok(&["snapshot", "create", "restorable", "s0"]);
    d.sh("restorable", "echo live > /root/v");
    let import_dir = d.dir.join("import-src");
    make_rootfs(&import_dir, "imported");
    std::fs::write(import_dir.join("root/blob"), vec![7u8; 8 << 20]).expect("write blob");
    let import_dir = import_dir.display().to_string();

    let mut done: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut worst = Duration::ZERO;
    // How many kills cut an operation short (its client failed), and how many landed while
    // a copy held keeper frozen.
    let (mut cut, mut while_frozen) = (0u64, 0u64);
    let keeper_freezer = common::freezer_file(&d, "keeper").expect("keeper's freezer");
    for round in 0..rounds {
        let s = seen(&d);
        let (kind, args) = pick(&mut rng, &s, round, &import_dir);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut client = d
            .command(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the operation");
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        d.kill_daemon();
        if std::fs::read_to_string(&keeper_freezer.0).is_ok_and(|s| s.trim() == keeper_freezer.2) {
            while_frozen += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = client.try_wait().expect("wait") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: `{}` hangs after the daemon died",
                argv.join(" ")
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            cut += 1;
        }
        let started = Instant::now();
        d.restart();
        let took = started.elapsed();
        worst = worst.max(took);
        assert!(
            took < Duration::from_secs(10),
            "round {round}: the daemon took {took:?} to be ready after `{}` was interrupted",
            argv.join(" ")
        );
        check(&d, round);
        *done.entry(kind).or_default() += 1;
    }
    eprintln!(
        "crash test: {rounds} kills, {cut} of them cutting the operation short, {while_frozen} while a copy held an instance frozen; operations: {done:?}; worst start-up {} ms",
        worst.as_millis()
    );
    for i in seen(&d).instances {
        let name = i["name"].as_str().unwrap_or_default().to_owned();
        d.ok(&["rm", "--force", &name]);
    }
    d.finish();
}
