//! mayfly benchmarks. Three suites, each against a running daemon (see `run.sh`, which
//! starts a private one):
//!
//! - `--suite lifecycle` (default), start-up, interleaved round by round:
//!   - A: `mayfly run --rm --network none busybox -- /bin/true` (the whole CLI invocation;
//!     without a network interface, as crun here: bench/net.sh compares networked launches);
//!   - B: `mayfly launch busybox --network none --name bN`, `mayfly stop bN`, then `mayfly rm bN`;
//!   - C: crun over a freshly mounted overlay of the same busybox layer;
//!   - D: the floor: namespaces + overlay + pivot_root + exec `/bin/true`, no runtime.
//!
//!   This suite first moves into a private mount namespace where the hybrid host's
//!   `/sys/fs/cgroup/unified/cgroup.controllers` is hidden behind an empty file (crun refuses
//!   the hybrid layout otherwise); nothing it mounts is visible to the host.
//! - `--suite snapshots`: snapshot, clone, publish and `cp -a` of the whole root against
//!   template size and changed data (`snapshots.rs`).
//! - `--suite rollout`: launching 100 instances, `template patch`, `rollout`, `rollback`;
//!   disk and daemon memory (`rollout.rs`).

mod cases;
mod fsutil;
mod rollout;
mod snapshots;
mod stats;
mod sys;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use stats::{Series, loadavg, percentile};

const USAGE: &str = "\
usage: mayfly-bench --socket PATH --state-dir DIR --work DIR [--suite S] [options]

  --suite S          lifecycle (default), snapshots or rollout
  --socket PATH      the mayfly daemon's API socket
  --state-dir DIR    the daemon's state directory (its busybox layer is the rootfs of all cases)
  --work DIR         scratch directory (same filesystem as the state dir is fairest)
  --mayfly PATH      mayfly binary (default: target/release/mayfly)
  --runs N           measured rounds (default: lifecycle 50, snapshots 20, rollout 10)
  --warmup N         unmeasured rounds first (default: lifecycle 5, snapshots 1, rollout 1)
  --json             print JSON results on stdout instead of the table
  --json-out FILE    also write the JSON results to FILE

lifecycle:
  --crun PATH        crun binary (default: /usr/bin/crun)
  --id-base N        host id the crun/floor containers' root maps to (default 1879048192)
  --no-userns        crun and floor without a user namespace
  --crun-no-seccomp  no seccomp profile for crun

snapshots:
  --sizes LIST       changed data per instance, MiB, comma-separated (default 0,1,10,100)
  --big-mb N         size of the generated big template, MiB (default 200)
  --seed N           seed of the generated tree (default 1)
  --no-publish       do not measure publish

rollout:
  --instances N      running transient instances (default 100)
  --wave K           wave size of the measured rollouts (default 10)
  --health CMD       health check of the second rollout (default 'test -f /etc/marker')
  --daemon-pid PID   the daemon's pid, for its memory (default: the forker's parent)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Lifecycle,
    Snapshots,
    Rollout,
}

#[derive(Debug)]
pub struct Args {
    pub suite: Suite,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub work: PathBuf,
    pub mayfly: PathBuf,
    pub crun: PathBuf,
    pub runs: usize,
    pub warmup: usize,
    pub id_base: u32,
    pub userns: bool,
    pub crun_seccomp: bool,
    pub json: bool,
    pub json_out: Option<PathBuf>,
    pub sizes: Vec<u64>,
    pub big_mb: u64,
    pub seed: u64,
    pub publish: bool,
    pub instances: usize,
    pub wave: usize,
    pub health: String,
    pub daemon_pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut socket = None;
    let mut state_dir = None;
    let mut work = None;
    let mut runs = None;
    let mut warmup = None;
    let mut a = Args {
        suite: Suite::Lifecycle,
        socket: PathBuf::new(),
        state_dir: PathBuf::new(),
        work: PathBuf::new(),
        mayfly: PathBuf::from("target/release/mayfly"),
        crun: PathBuf::from("/usr/bin/crun"),
        runs: 0,
        warmup: 0,
        id_base: 1_879_048_192,
        userns: true,
        crun_seccomp: true,
        json: false,
        json_out: None,
        sizes: vec![0, 1, 10, 100],
        big_mb: 200,
        seed: 1,
        publish: true,
        instances: 100,
        wave: 10,
        health: "test -f /etc/marker".into(),
        daemon_pid: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--work" => work = Some(PathBuf::from(value("--work")?)),
            "--mayfly" => a.mayfly = PathBuf::from(value("--mayfly")?),
            "--crun" => a.crun = PathBuf::from(value("--crun")?),
            "--suite" => {
                a.suite = match value("--suite")?.as_str() {
                    "lifecycle" => Suite::Lifecycle,
                    "snapshots" => Suite::Snapshots,
                    "rollout" => Suite::Rollout,
                    other => return Err(format!("unknown suite {other}")),
                }
            }
            "--runs" => {
                runs = Some(
                    value("--runs")?
                        .parse()
                        .map_err(|e| format!("--runs: {e}"))?,
                )
            }
            "--warmup" => {
                warmup = Some(
                    value("--warmup")?
                        .parse()
                        .map_err(|e| format!("--warmup: {e}"))?,
                )
            }
            "--sizes" => {
                a.sizes = value("--sizes")?
                    .split(',')
                    .map(|x| x.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--sizes: {e}"))?
            }
            "--big-mb" => {
                a.big_mb = value("--big-mb")?
                    .parse()
                    .map_err(|e| format!("--big-mb: {e}"))?
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--no-publish" => a.publish = false,
            "--instances" => {
                a.instances = value("--instances")?
                    .parse()
                    .map_err(|e| format!("--instances: {e}"))?
            }
            "--wave" => {
                a.wave = value("--wave")?
                    .parse()
                    .map_err(|e| format!("--wave: {e}"))?
            }
            "--health" => a.health = value("--health")?,
            "--daemon-pid" => {
                a.daemon_pid = Some(
                    value("--daemon-pid")?
                        .parse()
                        .map_err(|e| format!("--daemon-pid: {e}"))?,
                )
            }
            "--id-base" => {
                a.id_base = value("--id-base")?
                    .parse()
                    .map_err(|e| format!("--id-base: {e}"))?
            }
            "--no-userns" => a.userns = false,
            "--crun-no-seccomp" => a.crun_seccomp = false,
            "--json" => a.json = true,
            "--json-out" => a.json_out = Some(PathBuf::from(value("--json-out")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    a.socket = socket.ok_or("--socket is required")?;
    a.state_dir = state_dir.ok_or("--state-dir is required")?;
    a.work = work.ok_or("--work is required")?;
    let (default_runs, default_warmup) = match a.suite {
        Suite::Lifecycle => (50, 5),
        Suite::Snapshots => (20, 1),
        Suite::Rollout => (10, 1),
    };
    a.runs = runs.unwrap_or(default_runs);
    a.warmup = warmup.unwrap_or(default_warmup);
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if a.instances == 0 || a.wave == 0 {
        return Err("--instances and --wave must be at least 1".into());
    }
    Ok(a)
}

/// A stop at least this long ran into mayfly's default 10 s stop timeout.
const SLOW_STOP_MS: f64 = 9_900.0;

/// `hybrid`, `unified` or `legacy`, from the file system types under /sys/fs/cgroup.
pub fn cgroup_mode() -> &'static str {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let fstype = |p: &str| -> Option<i64> {
        let c = std::ffi::CString::new(p).ok()?;
        // SAFETY: zeroed statfs is a valid out buffer.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid string and out pointer.
        (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
    };
    if fstype("/sys/fs/cgroup") == Some(CGROUP2_SUPER_MAGIC) {
        "unified (v2)"
    } else if fstype("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
        "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)"
    } else {
        "legacy (v1)"
    }
}

/// Private mount namespace; hides the hybrid unified hierarchy's controllers from crun;
/// a tmpfs for crun's state. Nothing here is visible to the host, and all of it goes away
/// with this process.
fn enter_private_mount_ns(work: &Path) -> io::Result<()> {
    // SAFETY: plain flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    sys::mount(
        c"none",
        Path::new("/"),
        c"",
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if controllers.exists() {
        let empty = work.join("empty-controllers");
        std::fs::write(&empty, b"")?;
        sys::mount(&sys::cstr(&empty), controllers, c"", libc::MS_BIND, None)?;
    }
    Ok(())
}

fn remove_cgroup_parent(name: &str) {
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let p = e.path().join(name);
            if p.is_dir() {
                let _ = std::fs::remove_dir(&p);
            }
            let p = e.path().join("unified").join(name);
            if p.is_dir() {
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mayfly-bench: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match args.suite {
        Suite::Lifecycle => run(&args),
        Suite::Snapshots => snapshots::run(&args),
        Suite::Rollout => rollout::run(&args),
    };
    match result {
        Ok(()) => {}
        Err(e) => {
            eprintln!("mayfly-bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Progress and remarks: on stdout with the table, on stderr with `--json`.
pub fn note(args: &Args, msg: &str) {
    if args.json {
        eprintln!("{msg}");
    } else {
        println!("{msg}");
    }
}

fn run(args: &Args) -> io::Result<()> {
    // SAFETY: plain query.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::other("run as root"));
    }
    let mayfly = cases::Mayfly {
        bin: args.mayfly.clone(),
        socket: args.socket.clone(),
    };
    let layer = mayfly.single_layer(&args.state_dir, "busybox")?;
    let info = mayfly.info()?;
    let mayfly_userns = info["user_namespaces"].as_bool();

    std::fs::create_dir_all(&args.work)?;
    let work = args.work.canonicalize()?;
    enter_private_mount_ns(&work)?;
    let crun_state = work.join("crun-state");
    let bundle = work.join("bundle");
    let floor_root = work.join("floor-root");
    let scratch = work.join("scratch");
    for d in [&crun_state, &bundle.join("rootfs"), &floor_root, &scratch] {
        std::fs::create_dir_all(d)?;
    }
    // crun's default state directory (/run/crun) is a tmpfs: give it one here too.
    sys::mount(c"tmpfs", &crun_state, c"tmpfs", 0, Some(c"mode=700"))?;

    let me = std::process::id();
    let cgroup_parent = format!("mayfly-bench-{me}");
    let userns_fd = |want: bool| -> io::Result<Option<(std::os::fd::OwnedFd, u32)>> {
        if want {
            Ok(Some((
                sys::mapping_userns(args.id_base, cases::ID_COUNT)?,
                args.id_base,
            )))
        } else {
            Ok(None)
        }
    };
    let mut crun = cases::Crun {
        bin: args.crun.clone(),
        bundle,
        state: crun_state,
        scratch: scratch.clone(),
        layer: layer.clone(),
        userns: userns_fd(args.userns)?,
        seccomp: args.crun_seccomp,
        cgroup_parent: cgroup_parent.clone(),
    };
    let floor = cases::Floor {
        scratch: scratch.clone(),
        mount_point: floor_root,
        layer: layer.clone(),
        userns: userns_fd(args.userns)?,
    };

    // Probe crun with a user namespace once; fall back without one if it cannot.
    let mut crun_userns_note = if args.userns {
        "user namespace, 0 -> host ".to_string()
            + &args.id_base.to_string()
            + " x 65536, idmapped lower"
    } else {
        "no user namespace (--no-userns)".to_string()
    };
    if let Err(e) = crun.once("probe") {
        if crun.userns.is_some() {
            crun.userns = None;
            crun.once("probe").map_err(|e2| {
                io::Error::other(format!(
                    "crun fails with a user namespace ({e}) and without ({e2})"
                ))
            })?;
            crun_userns_note = format!("NO user namespace: crun failed with one here ({e})");
        } else {
            return Err(e);
        }
    }

    let result = measure(args, &mayfly, &crun, &floor);
    remove_cgroup_parent(&cgroup_parent);
    let series = result?;

    let kernel = sys::uname();
    let cpus = sys::online_cpus();
    let cg = cgroup_mode();
    let crun_version = crun.version();
    let [a, ls, l, s, rm, c, f] = &series.0;
    let ratio = |x: f64, y: f64| (x / y * 100.0).round() / 100.0;
    let results = json!({
        "kernel": kernel,
        "cpus": cpus,
        "cgroup_mode": cg,
        "mayfly_cgroup_mode": info["cgroup_mode"],
        "mayfly_user_namespaces": mayfly_userns,
        "mayfly_version": info["version"],
        "crun_version": crun_version,
        "crun_user_namespace": crun.userns.is_some(),
        "crun_config": crun_userns_note,
        "crun_seccomp": crun.seccomp,
        "floor_user_namespace": floor.userns.is_some(),
        "layer": layer,
        "runs": args.runs,
        "warmup": args.warmup,
        "order": "interleaved rounds: A B C D, A B C D, ...",
        "loadavg_before": series.1,
        "loadavg_after": loadavg(),
        "cases": {
            "mayfly_run_rm": a.json(),
            "mayfly_launch_stop": ls.json(),
            "mayfly_launch": l.json(),
            "mayfly_stop": s.json(),
            "mayfly_rm": rm.json(),
            "crun_fresh_overlay": c.json(),
            "floor": f.json(),
        },
        "mayfly_stops_at_timeout": s.ms.iter().filter(|x| **x >= SLOW_STOP_MS).count(),
        "ratios_median": {
            "mayfly_run_rm/crun": ratio(a.median(), c.median()),
            "mayfly_run_rm/floor": ratio(a.median(), f.median()),
            "mayfly_launch_stop/crun": ratio(ls.median(), c.median()),
            "mayfly_launch_stop/floor": ratio(ls.median(), f.median()),
            "crun/floor": ratio(c.median(), f.median()),
        },
        "ratios_p90": {
            "mayfly_run_rm/crun": ratio(a.p90(), c.p90()),
            "mayfly_run_rm/floor": ratio(a.p90(), f.p90()),
            "mayfly_launch_stop/crun": ratio(ls.p90(), c.p90()),
            "mayfly_launch_stop/floor": ratio(ls.p90(), f.p90()),
        },
    });
    if crate::emit_json(args, &results)? {
        return Ok(());
    }

    let yn = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let mut out = io::stdout().lock();
    writeln!(out)?;
    writeln!(out, "kernel            {kernel}")?;
    writeln!(out, "cpus              {cpus}")?;
    writeln!(
        out,
        "cgroup mode       {cg} (mayfly says: {})",
        info["cgroup_mode"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "mayfly userns     {} (mayfly info: user_namespaces)",
        yn(mayfly_userns)
    )?;
    writeln!(
        out,
        "crun              {crun_version}; {}; seccomp {}",
        crun_userns_note,
        if crun.seccomp {
            "deny-list like mayfly's"
        } else {
            "off"
        }
    )?;
    writeln!(
        out,
        "floor             {}",
        if floor.userns.is_some() {
            "user namespace + idmapped lower, as mayfly"
        } else {
            "no user namespace"
        }
    )?;
    writeln!(
        out,
        "rounds            {} measured after {} warm-up, interleaved A B C D",
        args.runs, args.warmup
    )?;
    writeln!(
        out,
        "load average      before {} / after {}",
        series.1,
        loadavg()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<46} {:>9} {:>9} {:>9} {:>9}",
        "case (wall time per iteration)", "median", "p90", "min", "max"
    )?;
    let row = |out: &mut dyn Write, name: &str, s: &Series| -> io::Result<()> {
        let v = s.sorted();
        writeln!(
            out,
            "{:<46} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>6.2} ms",
            name,
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            v[0],
            v[v.len() - 1]
        )
    };
    row(&mut out, "A  mayfly run --rm --network none busybox -- /bin/true", a)?;
    row(&mut out, "B  mayfly launch + stop", ls)?;
    row(&mut out, "     launch", l)?;
    row(&mut out, "     stop", s)?;
    row(&mut out, "   mayfly rm", rm)?;
    row(&mut out, "C  crun run + fresh overlay (mount..rm)", c)?;
    row(&mut out, "D  floor: ns + overlay + pivot + exec", f)?;
    let slow_stops = s.ms.iter().filter(|x| **x >= SLOW_STOP_MS).count();
    if slow_stops > 0 {
        writeln!(
            out,
            "   note: {slow_stops} stop(s) took 10 s or more: mayfly's stop timeout, i.e. the init did not act on\n         SIGTERM and was killed (see README: a stop right after launch can beat the init's trap)"
        )?;
    }
    writeln!(out)?;
    writeln!(out, "ratios (median; p90 in brackets)")?;
    writeln!(
        out,
        "  mayfly run --rm / crun   {:.2}x  ({:.2}x)",
        a.median() / c.median(),
        a.p90() / c.p90()
    )?;
    writeln!(
        out,
        "  mayfly run --rm / floor  {:.2}x  ({:.2}x)",
        a.median() / f.median(),
        a.p90() / f.p90()
    )?;
    writeln!(
        out,
        "  launch+stop / crun       {:.2}x  ({:.2}x)",
        ls.median() / c.median(),
        ls.p90() / c.p90()
    )?;
    writeln!(
        out,
        "  launch+stop / floor      {:.2}x  ({:.2}x)",
        ls.median() / f.median(),
        ls.p90() / f.p90()
    )?;
    writeln!(
        out,
        "  crun / floor             {:.2}x  ({:.2}x)",
        c.median() / f.median(),
        c.p90() / f.p90()
    )?;
    Ok(())
}

/// A, B (launch+stop, launch, stop, rm), C, D; and the load average at the start.
struct Measured([Series; 7], String);

fn measure(
    args: &Args,
    mayfly: &cases::Mayfly,
    crun: &cases::Crun,
    floor: &cases::Floor,
) -> io::Result<Measured> {
    let mut s: [Series; 7] = Default::default();
    let load = loadavg();
    let total = args.warmup + args.runs;
    note(
        args,
        &format!(
            "mayfly-bench: {} warm-up + {} measured rounds of A B C D…",
            args.warmup, args.runs
        ),
    );
    for round in 0..total {
        let keep = round >= args.warmup;
        let a = mayfly.run_once()?;
        let [l, st, rm] = mayfly.lifecycle_once(&format!("b{round}"))?;
        let c = crun.once(&format!("c{round}"))?;
        let f = floor.once(&format!("f{round}"))?;
        if keep {
            s[0].push(a);
            s[1].push(l + st);
            s[2].push(l);
            s[3].push(st);
            s[4].push(rm);
            s[5].push(c);
            s[6].push(f);
        }
        if (round + 1) % 10 == 0 {
            eprint!("\r  round {}/{total}", round + 1);
        }
    }
    eprintln!();
    Ok(Measured(s, load))
}

/// Writes `results` to `--json-out` if given; prints them instead of the table with `--json`
/// (returns whether it did).
pub fn emit_json(args: &Args, results: &serde_json::Value) -> io::Result<bool> {
    let text = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    if let Some(p) = &args.json_out {
        std::fs::write(p, format!("{text}\n"))?;
    }
    if args.json {
        println!("{text}");
    }
    Ok(args.json)
}
