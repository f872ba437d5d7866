//! mayfly start-up benchmark. Measures, in one run and interleaved round by round:
//!
//! - A: `mayfly run --rm busybox -- /bin/true` (the whole CLI invocation);
//! - B: `mayfly launch busybox --name bN`, `mayfly stop bN`, then `mayfly rm bN`;
//! - C: crun over a freshly mounted overlay of the same busybox layer;
//! - D: the floor: namespaces + overlay + pivot_root + exec `/bin/true`, no runtime.
//!
//! Needs root and a running mayfly daemon (see `run.sh`, which starts a private one). The
//! process first moves into a private mount namespace where the hybrid host's
//! `/sys/fs/cgroup/unified/cgroup.controllers` is hidden behind an empty file (crun refuses
//! the hybrid layout otherwise); nothing it mounts is visible to the host.

mod cases;
mod sys;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

const USAGE: &str = "\
usage: mayfly-bench --socket PATH --state-dir DIR --work DIR [options]

  --socket PATH      the mayfly daemon's API socket
  --state-dir DIR    the daemon's state directory (its busybox layer is the rootfs of all cases)
  --work DIR         scratch directory (same filesystem as the state dir is fairest)
  --mayfly PATH      mayfly binary (default: target/release/mayfly)
  --crun PATH        crun binary (default: /usr/bin/crun)
  --runs N           measured rounds (default 50)
  --warmup N         unmeasured rounds first (default 5)
  --id-base N        host id the crun/floor containers' root maps to (default 1879048192)
  --no-userns        crun and floor without a user namespace
  --crun-no-seccomp  no seccomp profile for crun
  --json             print JSON results on stdout instead of the table
  --json-out FILE    also write the JSON results to FILE";

#[derive(Debug)]
struct Args {
    socket: PathBuf,
    state_dir: PathBuf,
    work: PathBuf,
    mayfly: PathBuf,
    crun: PathBuf,
    runs: usize,
    warmup: usize,
    id_base: u32,
    userns: bool,
    crun_seccomp: bool,
    json: bool,
    json_out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut socket = None;
    let mut state_dir = None;
    let mut work = None;
    let mut a = Args {
        socket: PathBuf::new(),
        state_dir: PathBuf::new(),
        work: PathBuf::new(),
        mayfly: PathBuf::from("target/release/mayfly"),
        crun: PathBuf::from("/usr/bin/crun"),
        runs: 50,
        warmup: 5,
        id_base: 1_879_048_192,
        userns: true,
        crun_seccomp: true,
        json: false,
        json_out: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--work" => work = Some(PathBuf::from(value("--work")?)),
            "--mayfly" => a.mayfly = PathBuf::from(value("--mayfly")?),
            "--crun" => a.crun = PathBuf::from(value("--crun")?),
            "--runs" => {
                a.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--warmup" => {
                a.warmup = value("--warmup")?
                    .parse()
                    .map_err(|e| format!("--warmup: {e}"))?
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
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(a)
}

/// Linear interpolation between closest ranks (numpy's default), on sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = p * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[derive(Debug, Default)]
struct Series {
    ms: Vec<f64>,
}

impl Series {
    fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        percentile(&self.sorted(), 0.5)
    }
    fn p90(&self) -> f64 {
        percentile(&self.sorted(), 0.9)
    }
    fn json(&self) -> serde_json::Value {
        let s = self.sorted();
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        json!({
            "n": s.len(),
            "median_ms": round3(percentile(&s, 0.5)),
            "p90_ms": round3(percentile(&s, 0.9)),
            "min_ms": round3(s.first().copied().unwrap_or(f64::NAN)),
            "max_ms": round3(s.last().copied().unwrap_or(f64::NAN)),
            "mean_ms": round3(mean),
            "samples_ms": self.ms.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        })
    }
}

/// A stop at least this long ran into mayfly's default 10 s stop timeout.
const SLOW_STOP_MS: f64 = 9_900.0;

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `hybrid`, `unified` or `legacy`, from the file system types under /sys/fs/cgroup.
fn cgroup_mode() -> &'static str {
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The one `blake3-*` directory under `<state>/layers`.
fn find_layer(state: &Path) -> io::Result<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(state.join("layers"))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("blake3-") && e.file_type()?.is_dir() {
            found.push(e.path());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(io::Error::other(format!(
            "expected exactly one layer under {}/layers (a fresh daemon's built-in busybox), found {n}",
            state.display()
        ))),
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
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("mayfly-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn note(args: &Args, msg: &str) {
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
    let layer = find_layer(&args.state_dir)?;
    let mayfly = cases::Mayfly {
        bin: args.mayfly.clone(),
        socket: args.socket.clone(),
    };
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
    let text = serde_json::to_string_pretty(&results).map_err(io::Error::other)?;
    if let Some(p) = &args.json_out {
        std::fs::write(p, format!("{text}\n"))?;
    }
    if args.json {
        println!("{text}");
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
    row(&mut out, "A  mayfly run --rm busybox -- /bin/true", a)?;
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
