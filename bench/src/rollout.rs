//! Rollout suite: a template patch rolled out over `--instances` (default 100) running
//! transient instances of the built-in busybox template.
//!
//! 1. Launches the instances one after the other (`mayfly launch busybox --name ro-NNN`, each
//!    timed), with the daemon's and the forker's memory (`VmRSS`) before and after, and the
//!    state directory's disk use.
//! 2. Then, per round (the first `--warmup` rounds are not recorded):
//!    - `template rollback busybox --to V0` (untimed; V0 is the version found at the start),
//!      so that every round's patches are built on the same base and stacks do not deepen;
//!    - `template patch busybox --from DIR` (a small directory: `/etc/marker`, `/etc/motd`,
//!      a script), timed, with the state directory's growth and the new layer's size;
//!    - `template rollout busybox --wave K` (timed; the JSON event stream gives each wave's
//!      and each reset's time);
//!    - a second patch, then `template rollout busybox --wave K --health CMD` (timed);
//!    - `template rollback busybox` (timed: it only moves a pointer);
//!    - `template rollout busybox --wave N` (all instances in one wave, back onto the
//!      rolled-back version; timed).
//!
//!    Before each timed operation, mayfly's trash is drained and the file system flushed.
//! 3. Removes the instances (`rm --force`, each timed), points the template back at V0,
//!    removes the versions it made and collects the layers, and checks that the state
//!    directory is back to its size at the start.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cases::Mayfly;
use crate::fsutil;
use crate::stats::{Series, fmt_bytes, fmt_ms, loadavg, round3};
use crate::{Args, note};

const TEMPLATE: &str = "busybox";

/// Memory of the daemon, the forker and the instances' inits at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    daemon_rss: u64,
    daemon_hwm: u64,
    forker_rss: u64,
    inits_pss: u64,
}

impl Memory {
    fn json(&self) -> serde_json::Value {
        json!({
            "daemon_rss_bytes": self.daemon_rss,
            "daemon_hwm_bytes": self.daemon_hwm,
            "forker_rss_bytes": self.forker_rss,
            "inits_pss_bytes": self.inits_pss,
        })
    }
}

/// `Pss` of a process from `smaps_rollup` (its share of the pages it maps), in bytes.
fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The parent pid of `pid` (field 4 of `/proc/PID/stat`).
fn ppid(pid: u32) -> io::Result<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc/PID/stat"))?;
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other("bad /proc/PID/stat"))
}

/// Timings taken from one rollout's event stream.
#[derive(Debug, Default)]
struct Rollout {
    total: Duration,
    reset: usize,
    /// From the CLI's spawn to the first wave (CLI start, request, shadowed-path scan).
    before_first_wave: Duration,
    /// Time between consecutive `reset` events (≈ one instance's reset).
    resets: Vec<Duration>,
    /// Time between consecutive `healthy` events (≈ one health check).
    checks: Vec<Duration>,
    /// Each wave, from its event to the next wave's (or the end).
    waves: Vec<Duration>,
}

fn analyse(
    args_txt: &str,
    total: Duration,
    ok: bool,
    events: &[(Duration, serde_json::Value)],
) -> io::Result<Rollout> {
    let mut r = Rollout {
        total,
        ..Rollout::default()
    };
    let mut last: Option<Duration> = None;
    let mut wave_start: Option<Duration> = None;
    for (at, v) in events {
        if v.get("wave").is_some() {
            if let Some(w) = wave_start {
                r.waves.push(*at - w);
            } else {
                r.before_first_wave = *at;
            }
            wave_start = Some(*at);
        } else if let Some(i) = v.get("instance") {
            let status = i["status"].as_str().unwrap_or("");
            let since = last.map_or(Duration::ZERO, |l| *at - l);
            match status {
                "reset" => r.resets.push(since),
                "healthy" => r.checks.push(since),
                other => {
                    return Err(io::Error::other(format!(
                        "mayfly {args_txt}: instance {} is {other}: {}",
                        i["name"], i["detail"]
                    )));
                }
            }
        } else if let Some(d) = v.get("done") {
            r.reset = d["reset"].as_array().map_or(0, Vec::len);
            if let Some(w) = wave_start {
                r.waves.push(*at - w);
            }
        } else if let Some(e) = v.get("error") {
            return Err(io::Error::other(format!("mayfly {args_txt}: {e}")));
        }
        last = Some(*at);
    }
    if !ok {
        return Err(io::Error::other(format!(
            "mayfly {args_txt} failed: {:?}",
            events.last()
        )));
    }
    Ok(r)
}

struct Suite<'a> {
    args: &'a Args,
    mf: Mayfly,
    state: PathBuf,
    work: PathBuf,
    daemon: u32,
    forker: u32,
    names: Vec<String>,
}

impl Suite<'_> {
    fn quiesce(&self) -> io::Result<()> {
        fsutil::quiesce(&self.state)
    }

    fn memory(&self) -> io::Result<Memory> {
        let (daemon_rss, daemon_hwm) = fsutil::rss(self.daemon)?;
        let (forker_rss, _) = fsutil::rss(self.forker)?;
        let mut inits_pss = 0;
        if !self.names.is_empty() {
            let (_, list) = self.mf.call_json(&["list", "--json"])?;
            for i in list.as_array().into_iter().flatten() {
                let ours = i["name"]
                    .as_str()
                    .is_some_and(|n| self.names.iter().any(|m| m == n));
                if let (true, Some(pid)) = (ours, i["pid"].as_u64()) {
                    inits_pss += pss(pid as u32);
                }
            }
        }
        Ok(Memory {
            daemon_rss,
            daemon_hwm,
            forker_rss,
            inits_pss,
        })
    }

    fn state_bytes(&self) -> io::Result<u64> {
        Ok(fsutil::usage(&self.state)?.allocated)
    }

    /// A small patch directory: a marker, a motd and a script (~ a few KiB).
    fn patch_dir(&self, tag: &str) -> io::Result<PathBuf> {
        let dir = self.work.join(format!("patch-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc"))?;
        std::fs::create_dir_all(dir.join("usr/local/bin"))?;
        std::fs::write(dir.join("etc/marker"), format!("{tag}\n"))?;
        std::fs::write(
            dir.join("etc/motd"),
            format!("mayfly-bench patch {tag}\n").repeat(40),
        )?;
        let script = dir.join("usr/local/bin/bench-hello");
        std::fs::write(&script, format!("#!/bin/sh\necho hello from patch {tag}\n"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// `template patch busybox --from DIR`: (time, new version, its new layer's directory).
    fn patch(&self, dir: &Path) -> io::Result<(Duration, u64, PathBuf)> {
        let d = dir.to_string_lossy().into_owned();
        let (t, v) = self.mf.call_json(&[
            "template",
            "patch",
            TEMPLATE,
            "--from",
            &d,
            "--json",
            "-m",
            "mayfly-bench",
        ])?;
        let version = v["current_version"]
            .as_u64()
            .ok_or_else(|| io::Error::other("patch: no current_version"))?;
        let digest = v["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["version"].as_u64() == Some(version))
            .and_then(|x| x["layers"].as_array()?.last()?["digest"].as_str())
            .ok_or_else(|| io::Error::other("patch: no layer for the new version"))?
            .to_owned();
        Ok((
            t,
            version,
            self.state.join("layers").join(digest.replace(':', "-")),
        ))
    }

    fn rollout(&self, wave: usize, health: Option<&str>) -> io::Result<Rollout> {
        let w = wave.to_string();
        let mut a = vec!["template", "rollout", TEMPLATE, "--wave", &w, "--json"];
        if let Some(h) = health {
            a.push("--health");
            a.push(h);
        }
        let (total, ok, events) = self.mf.call_stream(&a)?;
        let r = analyse(&a.join(" "), total, ok, &events)?;
        if r.reset != self.names.len() {
            return Err(io::Error::other(format!(
                "mayfly {}: reset {} instance(s), expected {}",
                a.join(" "),
                r.reset,
                self.names.len()
            )));
        }
        Ok(r)
    }
}

#[derive(Debug, Default)]
struct Samples {
    launch: Series,
    rm: Series,
    patch: Series,
    patch_disk: Series,
    patch_layer: Series,
    rollout: Series,
    rollout_resets: Series,
    rollout_waves: Series,
    rollout_before: Series,
    health: Series,
    health_resets: Series,
    health_checks: Series,
    health_waves: Series,
    rollback: Series,
    back: Series,
    back_resets: Series,
}

pub fn run(args: &Args) -> io::Result<()> {
    // SAFETY: plain query.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::other("run as root"));
    }
    std::fs::create_dir_all(&args.work)?;
    let mf = Mayfly {
        bin: args.mayfly.clone(),
        socket: args.socket.clone(),
    };
    let info = mf.info()?;
    let forker = info["forker_pid"]
        .as_u64()
        .ok_or_else(|| io::Error::other("mayfly info: no forker_pid"))? as u32;
    let daemon = match args.daemon_pid {
        Some(p) => p,
        None => ppid(forker)?,
    };
    let mut suite = Suite {
        args,
        mf,
        state: args.state_dir.canonicalize()?,
        work: args.work.canonicalize()?,
        daemon,
        forker,
        names: Vec::new(),
    };
    let (_, t) = suite
        .mf
        .call_json(&["template", "info", TEMPLATE, "--json"])?;
    let v0 = t["current_version"]
        .as_u64()
        .ok_or_else(|| io::Error::other("template info: no current_version"))?;
    let layer = suite.mf.single_layer(&suite.state, TEMPLATE)?;
    let template_size = fsutil::usage(&layer)?;

    let load_before = loadavg();
    let started = Instant::now();
    let mut s = Samples::default();
    let mut mem = Vec::new();
    let mut made_versions = Vec::new();
    let mut disk = serde_json::Map::new();
    let result = measure(
        &mut suite,
        v0,
        &mut s,
        &mut mem,
        &mut made_versions,
        &mut disk,
    );

    // Clean up, whatever happened: instances, versions, layers.
    let mut errors = Vec::new();
    if let Err(e) = &result {
        errors.push(format!("{e}"));
    }
    let present = suite.mf.names(&["list", "--json"]).unwrap_or_default();
    for n in &suite.names {
        if !present.contains(n) {
            continue;
        }
        match suite.mf.call(&["rm", "--force", n]) {
            Ok((d, _)) => s.rm.push(d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    suite.names.clear();
    let v0s = v0.to_string();
    if let Err(e) = suite
        .mf
        .call(&["template", "rollback", TEMPLATE, "--to", &v0s])
    {
        // Already there is fine.
        let (_, t) = suite
            .mf
            .call_json(&["template", "info", TEMPLATE, "--json"])?;
        if t["current_version"].as_u64() != Some(v0) {
            errors.push(e.to_string());
        }
    }
    for v in &made_versions {
        let spec = format!("{TEMPLATE}@{v}");
        if let Err(e) = suite.mf.call(&["template", "rm", &spec]) {
            errors.push(e.to_string());
        }
    }
    let _ = suite.mf.call(&["template", "gc"]);
    let _ = suite.quiesce();
    let state_end = suite.state_bytes().unwrap_or(0);
    mem.push(("after removing them", suite.memory()?));
    if !errors.is_empty() {
        return Err(io::Error::other(errors.join("; ")));
    }
    disk.insert("state_after_cleanup_bytes".into(), json!(state_end));
    report(
        args,
        &info,
        &s,
        &mem,
        &disk,
        template_size,
        &load_before,
        started.elapsed(),
    )
}

fn measure(
    suite: &mut Suite,
    v0: u64,
    s: &mut Samples,
    mem: &mut Vec<(&'static str, Memory)>,
    made: &mut Vec<u64>,
    disk: &mut serde_json::Map<String, serde_json::Value>,
) -> io::Result<()> {
    let args = suite.args;
    let n = args.instances;
    suite.quiesce()?;
    let state0 = suite.state_bytes()?;
    disk.insert("state_before_bytes".into(), json!(state0));
    mem.push(("before launching", suite.memory()?));
    note(
        args,
        &format!("mayfly-bench: launching {n} transient instances of {TEMPLATE}…"),
    );
    let t = Instant::now();
    for i in 0..n {
        let name = format!("ro-{i:03}");
        let (d, _) = suite.mf.call(&["launch", TEMPLATE, "--name", &name])?;
        suite.names.push(name);
        s.launch.push(d);
    }
    let all = t.elapsed();
    disk.insert(
        "launch_all_ms".into(),
        json!(round3(all.as_secs_f64() * 1000.0)),
    );
    suite.quiesce()?;
    mem.push(("after launching them", suite.memory()?));
    let state1 = suite.state_bytes()?;
    disk.insert("state_after_launch_bytes".into(), json!(state1));

    let total = args.warmup + args.runs;
    note(
        args,
        &format!(
            "mayfly-bench: {} warm-up + {} measured rounds of patch, rollout --wave {w}, patch, rollout --wave {w} --health, rollback, rollout --wave {n}…",
            args.warmup,
            args.runs,
            w = args.wave
        ),
    );
    let v0s = v0.to_string();
    for round in 0..total {
        let keep = round >= args.warmup;
        // Same base every round.
        let (_, t) = suite
            .mf
            .call_json(&["template", "info", TEMPLATE, "--json"])?;
        if t["current_version"].as_u64() != Some(v0) {
            suite
                .mf
                .call(&["template", "rollback", TEMPLATE, "--to", &v0s])?;
        }

        // patch A, rollout
        let dir = suite.patch_dir(&format!("{round}a"))?;
        suite.quiesce()?;
        let before = suite.state_bytes()?;
        let (d, va, layer_a) = suite.patch(&dir)?;
        suite.quiesce()?;
        let after = suite.state_bytes()?;
        made.push(va);
        if keep {
            s.patch.push(d);
            s.patch_disk.push_value(after as f64 - before as f64);
            s.patch_layer
                .push_value(fsutil::usage(&layer_a)?.allocated as f64);
        }
        std::fs::remove_dir_all(&dir)?;
        suite.quiesce()?;
        let r = suite.rollout(args.wave, None)?;
        if keep {
            s.rollout.push(r.total);
            s.rollout_before.push(r.before_first_wave);
            r.resets.iter().for_each(|x| s.rollout_resets.push(*x));
            r.waves.iter().for_each(|x| s.rollout_waves.push(*x));
        }

        // patch B, rollout with a health check
        let dir = suite.patch_dir(&format!("{round}b"))?;
        suite.quiesce()?;
        let before = suite.state_bytes()?;
        let (d, vb, layer_b) = suite.patch(&dir)?;
        suite.quiesce()?;
        let after = suite.state_bytes()?;
        made.push(vb);
        if keep {
            s.patch.push(d);
            s.patch_disk.push_value(after as f64 - before as f64);
            s.patch_layer
                .push_value(fsutil::usage(&layer_b)?.allocated as f64);
        }
        std::fs::remove_dir_all(&dir)?;
        suite.quiesce()?;
        let r = suite.rollout(args.wave, Some(&args.health))?;
        if r.checks.len() != n {
            return Err(io::Error::other(format!(
                "rollout --health: {} healthy events, expected {n}",
                r.checks.len()
            )));
        }
        if keep {
            s.health.push(r.total);
            r.resets.iter().for_each(|x| s.health_resets.push(*x));
            r.checks.iter().for_each(|x| s.health_checks.push(*x));
            r.waves.iter().for_each(|x| s.health_waves.push(*x));
        }

        // rollback (a pointer), then bring every instance back in one wave
        suite.quiesce()?;
        let (d, v) = suite
            .mf
            .call(&["template", "rollback", TEMPLATE])
            .and_then(|(d, _)| {
                suite
                    .mf
                    .call_json(&["template", "info", TEMPLATE, "--json"])
                    .map(|(_, v)| (d, v))
            })?;
        if v["current_version"].as_u64() != Some(va) {
            return Err(io::Error::other(format!(
                "rollback: now on version {}, expected {va}",
                v["current_version"]
            )));
        }
        suite.quiesce()?;
        let r = suite.rollout(n, None)?;
        if keep {
            s.rollback.push(d);
            s.back.push(r.total);
            r.resets.iter().for_each(|x| s.back_resets.push(*x));
        }
        eprint!("\r  round {}/{total}", round + 1);
    }
    eprintln!();
    mem.push(("after the rounds", suite.memory()?));

    // Removal, timed (the clean-up in `run` only removes what is left).
    note(args, &format!("mayfly-bench: removing the {n} instances…"));
    let names = std::mem::take(&mut suite.names);
    for (i, name) in names.iter().enumerate() {
        match suite.mf.call(&["rm", "--force", name]) {
            Ok((d, _)) => s.rm.push(d),
            Err(e) => {
                suite.names = names[i..].to_vec();
                return Err(e);
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    info: &serde_json::Value,
    s: &Samples,
    mem: &[(&str, Memory)],
    disk: &serde_json::Map<String, serde_json::Value>,
    template: fsutil::Usage,
    load_before: &str,
    took: Duration,
) -> io::Result<()> {
    let n = args.instances as f64;
    let first10 = Series {
        ms: s.launch.ms.iter().take(10).copied().collect(),
    };
    let last10 = Series {
        ms: s.launch.ms.iter().rev().take(10).copied().collect(),
    };
    let results = json!({
        "suite": "rollout",
        "kernel": crate::sys::uname(),
        "cpus": crate::sys::online_cpus(),
        "cgroup_mode": crate::cgroup_mode(),
        "mayfly_version": info["version"],
        "mayfly_cgroup_mode": info["cgroup_mode"],
        "instances": args.instances,
        "wave": args.wave,
        "health": args.health,
        "runs": args.runs,
        "warmup": args.warmup,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "seconds": round3(took.as_secs_f64()),
        "template_layer": {
            "allocated_bytes": template.allocated,
            "apparent_bytes": template.apparent,
            "entries": template.entries,
        },
        "copies_of_template_bytes": template.allocated as f64 * n,
        "disk": disk,
        "memory": mem.iter().map(|(k, m)| json!({"when": k, "memory": m.json()})).collect::<Vec<_>>(),
        "launch": s.launch.json(),
        "launch_first10": first10.json(),
        "launch_last10": last10.json(),
        "rm": s.rm.json(),
        "patch": s.patch.json(),
        "patch_state_growth_bytes": s.patch_disk.json(),
        "patch_layer_bytes": s.patch_layer.json(),
        "rollout": s.rollout.json(),
        "rollout_before_first_wave": s.rollout_before.json(),
        "rollout_per_reset": s.rollout_resets.json(),
        "rollout_per_wave": s.rollout_waves.json(),
        "rollout_health": s.health.json(),
        "rollout_health_per_reset": s.health_resets.json(),
        "rollout_health_per_check": s.health_checks.json(),
        "rollout_health_per_wave": s.health_waves.json(),
        "rollback": s.rollback.json(),
        "rollout_all_in_one_wave": s.back.json(),
        "rollout_all_in_one_wave_per_reset": s.back_resets.json(),
    });
    if crate::emit_json(args, &results)? {
        return Ok(());
    }
    let get = |k: &str| disk.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let mut out = io::stdout().lock();
    let mp = |x: &Series| format!("{:>9} {:>9}", fmt_ms(x.median()), fmt_ms(x.p90()));
    writeln!(out)?;
    writeln!(out, "kernel            {}", crate::sys::uname())?;
    writeln!(out, "cpus              {}", crate::sys::online_cpus())?;
    writeln!(
        out,
        "mayfly            {} ({} cgroups)",
        info["version"].as_str().unwrap_or("?"),
        info["cgroup_mode"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "instances         {} transient, busybox; rounds: {} measured after {} warm-up; {:.0} s in all",
        args.instances,
        args.runs,
        args.warmup,
        took.as_secs_f64()
    )?;
    writeln!(
        out,
        "load average      before {load_before} / after {}",
        loadavg()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>9} {:>9}",
        "operation (wall time of the CLI call)", "median", "p90"
    )?;
    writeln!(
        out,
        "{:<52} {}   ({} for all {}; first 10 {}, last 10 {})",
        "launch busybox --name ro-NNN",
        mp(&s.launch),
        fmt_ms(get("launch_all_ms")),
        args.instances,
        fmt_ms(first10.median()),
        fmt_ms(last10.median()),
    )?;
    writeln!(
        out,
        "{:<52} {}",
        "template patch busybox --from DIR",
        mp(&s.patch)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        format!("template rollout --wave {}", args.wave),
        mp(&s.rollout)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        "    per instance reset (from the event stream)",
        mp(&s.rollout_resets)
    )?;
    writeln!(out, "{:<52} {}", "    per wave", mp(&s.rollout_waves))?;
    writeln!(
        out,
        "{:<52} {}",
        "    CLI start to the first wave",
        mp(&s.rollout_before)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        format!(
            "template rollout --wave {} --health '{}'",
            args.wave, args.health
        ),
        mp(&s.health)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        "    per instance reset",
        mp(&s.health_resets)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        "    per health check",
        mp(&s.health_checks)
    )?;
    writeln!(out, "{:<52} {}", "    per wave", mp(&s.health_waves))?;
    writeln!(
        out,
        "{:<52} {}",
        "template rollback busybox",
        mp(&s.rollback)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        format!(
            "template rollout --wave {} (after the rollback)",
            args.instances
        ),
        mp(&s.back)
    )?;
    writeln!(
        out,
        "{:<52} {}",
        "    per instance reset",
        mp(&s.back_resets)
    )?;
    writeln!(out, "{:<52} {}", "rm --force ro-NNN", mp(&s.rm))?;
    writeln!(out)?;
    writeln!(out, "Disk (allocated bytes)")?;
    writeln!(
        out,
        "  one patch: state directory +{} (median; the new layer itself {})",
        fmt_bytes(s.patch_disk.median()),
        fmt_bytes(s.patch_layer.median())
    )?;
    writeln!(
        out,
        "  {} full copies of the template's root: {} ({} x {})",
        args.instances,
        fmt_bytes(template.allocated as f64 * n),
        args.instances,
        fmt_bytes(template.allocated as f64)
    )?;
    writeln!(
        out,
        "  {} running instances: state directory +{} ({} each)",
        args.instances,
        fmt_bytes(get("state_after_launch_bytes") - get("state_before_bytes")),
        fmt_bytes((get("state_after_launch_bytes") - get("state_before_bytes")) / n)
    )?;
    writeln!(
        out,
        "  state directory at the start {}, after the clean-up {}",
        fmt_bytes(get("state_before_bytes")),
        fmt_bytes(get("state_after_cleanup_bytes"))
    )?;
    writeln!(out)?;
    writeln!(out, "Memory (VmRSS; inits: sum of Pss)")?;
    writeln!(
        out,
        "  {:<24} {:>11} {:>11} {:>11} {:>11}",
        "", "daemon", "daemon peak", "forker", "inits"
    )?;
    for (k, m) in mem {
        writeln!(
            out,
            "  {:<24} {:>11} {:>11} {:>11} {:>11}",
            k,
            fmt_bytes(m.daemon_rss as f64),
            fmt_bytes(m.daemon_hwm as f64),
            fmt_bytes(m.forker_rss as f64),
            fmt_bytes(m.inits_pss as f64)
        )?;
    }
    Ok(())
}
