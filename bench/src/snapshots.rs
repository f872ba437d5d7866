//! Snapshot suite: what a snapshot, a clone and a publish cost against the template's size
//! (they should not depend on it) and against the instance's changed data (they should be
//! linear in it), beside `cp -a` of the instance's whole root (what copying a VM image or a
//! full container root costs).
//!
//! Two templates: the built-in `busybox` (~2 MB) and `bench-big`, generated here: the busybox
//! tree plus `--big-mb` MiB (default 200) of seeded, incompressible files of mixed sizes
//! under `/usr/share/filler`, imported with `mayfly template import`. For each template and
//! each size in `--sizes` (MiB; default 0, 1, 10, 100) one running persistent instance holds
//! that much changed data in 1 MiB files (`head -c 1048576 /dev/urandom` inside, via exec).
//!
//! Each round visits every instance (the order rotates from round to round) and times, as
//! whole CLI invocations:
//! - `snapshot create` (and the frozen time it reports),
//! - `clone --snapshot` of that snapshot (the clone and the snapshot are removed after,
//!   untimed),
//! - `clone` of the running instance (removed after, untimed),
//! - `publish --as` (the template removed after, untimed; optional),
//! - `cp -a --one-file-system /proc/<init>/root/. DEST` into the work directory (same file
//!   system as the state directory), and the same followed by `syncfs` (the snapshot
//!   flushes; `cp -a` alone does not), removed after, untimed.
//!
//! Before every timed operation the suite waits for mayfly's trash to be emptied and flushes
//! the file system, so that no operation pays for an earlier one's deletions or dirty pages.
//! Disk: the state directory's allocated bytes before and after each operation (before its
//! clean-up), against the whole root's size.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cases::Mayfly;
use crate::fsutil::{self, Usage};
use crate::stats::{Series, fmt_bytes, fmt_ms, loadavg, round3};
use crate::{Args, note};

const MIB: u64 = 1 << 20;
const BIG: &str = "bench-big";

/// One instance: a template and an amount of changed data, with its samples.
#[derive(Debug, Default)]
struct Cell {
    template: String,
    mb: u64,
    instance: String,
    pid: u32,
    snapshot: Series,
    frozen: Series,
    clone_snapshot: Series,
    clone_running: Series,
    publish: Series,
    cp: Series,
    cp_sync: Series,
    /// Bytes added to the state directory (allocated), per operation.
    disk_snapshot: Series,
    disk_clone_snapshot: Series,
    disk_clone_running: Series,
    disk_publish: Series,
    /// `size` reported by `snapshot create`.
    snapshot_size: u64,
    snapshot_entries: u64,
    /// The whole root as the instance sees it (measured on the first `cp -a` copy).
    root: Usage,
}

fn remove_tree(p: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io::Error::other(format!("remove {}: {e}", p.display())))
        }
        _ => Ok(()),
    }
}

fn state_bytes(state: &Path) -> io::Result<f64> {
    Ok(fsutil::usage(state)?.allocated as f64)
}

struct Suite<'a> {
    args: &'a Args,
    mf: Mayfly,
    state: PathBuf,
    work: PathBuf,
}

impl Suite<'_> {
    fn quiesce(&self) -> io::Result<()> {
        fsutil::quiesce(&self.state)
    }

    /// Builds and imports `bench-big`; returns (import time, filler written, tree usage).
    fn make_big_template(&self) -> io::Result<(Duration, fsutil::Filler, Usage)> {
        let busybox = self.mf.single_layer(&self.state, "busybox")?;
        let root = self.work.join("bigroot");
        remove_tree(&root)?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", busybox.display()))
            .arg(&root)
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "cp -a of the busybox layer: {status}"
            )));
        }
        let have = fsutil::usage(&root)?.apparent;
        let target = (self.args.big_mb * MIB).saturating_sub(have);
        let filler =
            fsutil::generate_filler(&root.join("usr/share/filler"), target, self.args.seed)?;
        let tree = fsutil::usage(&root)?;
        self.quiesce()?;
        let r = root.to_string_lossy().into_owned();
        let imported = self.mf.call(&[
            "template",
            "import",
            BIG,
            &r,
            "--cmd",
            "/sbin/init",
            "-m",
            "mayfly-bench: busybox + seeded filler",
        ]);
        remove_tree(&root)?;
        let (d, _) = imported?;
        Ok((d, filler, tree))
    }

    fn launch(&self, cell: &mut Cell) -> io::Result<()> {
        self.mf.call(&[
            "launch",
            &cell.template,
            "--name",
            &cell.instance,
            "--persistent",
        ])?;
        if cell.mb > 0 {
            let script = format!(
                "mkdir -p /root/changed && i=0 && while [ $i -lt {} ]; do \
                 head -c 1048576 /dev/urandom > /root/changed/f$i || exit 1; i=$((i+1)); done",
                cell.mb
            );
            self.mf
                .call(&["exec", &cell.instance, "--", "sh", "-c", &script])?;
        }
        let (_, info) = self.mf.call_json(&["info", &cell.instance, "--json"])?;
        cell.pid = info["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| io::Error::other(format!("no pid for {}", cell.instance)))?;
        Ok(())
    }

    /// One visit of a cell: every operation once. `keep` records the samples.
    fn visit(&self, cell: &mut Cell, round: usize, keep: bool) -> io::Result<()> {
        let inst = cell.instance.clone();
        let snap = format!("r{round}");

        // snapshot create
        self.quiesce()?;
        let before = state_bytes(&self.state)?;
        let (d, v) = self
            .mf
            .call_json(&["snapshot", "create", &inst, &snap, "--json"])?;
        let after = state_bytes(&self.state)?;
        if keep {
            cell.snapshot.push(d);
            cell.frozen
                .push_value(v["frozen_ms"].as_f64().unwrap_or(f64::NAN));
            cell.disk_snapshot.push_value(after - before);
            cell.snapshot_size = v["size"].as_u64().unwrap_or(0);
            cell.snapshot_entries = v["entries"].as_u64().unwrap_or(0);
        }

        // clone --snapshot
        let name = format!("{inst}-cs{round}");
        self.quiesce()?;
        let before = state_bytes(&self.state)?;
        let (d, _) = self
            .mf
            .call(&["clone", &inst, &name, "--snapshot", &snap])?;
        let after = state_bytes(&self.state)?;
        if keep {
            cell.clone_snapshot.push(d);
            cell.disk_clone_snapshot.push_value(after - before);
        }
        self.mf.call(&["rm", "--force", &name])?;
        self.mf.call(&["snapshot", "rm", &inst, &snap])?;

        // clone of the running instance
        let name = format!("{inst}-cr{round}");
        self.quiesce()?;
        let before = state_bytes(&self.state)?;
        let (d, _) = self.mf.call(&["clone", &inst, &name])?;
        let after = state_bytes(&self.state)?;
        if keep {
            cell.clone_running.push(d);
            cell.disk_clone_running.push_value(after - before);
        }
        self.mf.call(&["rm", "--force", &name])?;

        // publish
        if self.args.publish {
            let t = format!("{inst}-pub{round}");
            self.quiesce()?;
            let before = state_bytes(&self.state)?;
            let (d, _) = self.mf.call(&["publish", &inst, "--as", &t])?;
            let after = state_bytes(&self.state)?;
            if keep {
                cell.publish.push(d);
                cell.disk_publish.push_value(after - before);
            }
            self.mf.call(&["template", "rm", &t])?;
        }

        // cp -a of the whole root, as the instance sees it
        let root = format!("/proc/{}/root", cell.pid);
        if !Path::new(&root).join("bin/busybox").exists() {
            return Err(io::Error::other(format!(
                "{root} is not {}'s root any more (did its init restart?)",
                inst
            )));
        }
        let dest = self.work.join(format!("cp-{inst}"));
        remove_tree(&dest)?;
        self.quiesce()?;
        let t = Instant::now();
        let status = Command::new("cp")
            .args(["-a", "--one-file-system"])
            .arg(format!("{root}/."))
            .arg(&dest)
            .stdin(Stdio::null())
            .status()?;
        let copied = t.elapsed();
        fsutil::syncfs(&dest)?;
        let synced = t.elapsed();
        if !status.success() {
            remove_tree(&dest)?;
            return Err(io::Error::other(format!("cp -a {root}: {status}")));
        }
        if keep {
            cell.cp.push(copied);
            cell.cp_sync.push(synced);
            if cell.root.entries == 0 {
                cell.root = fsutil::usage(&dest)?;
            }
        }
        remove_tree(&dest)?;
        Ok(())
    }
}

pub fn run(args: &Args) -> io::Result<()> {
    // SAFETY: plain query.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::other("run as root"));
    }
    std::fs::create_dir_all(&args.work)?;
    let suite = Suite {
        args,
        mf: Mayfly {
            bin: args.mayfly.clone(),
            socket: args.socket.clone(),
        },
        state: args.state_dir.canonicalize()?,
        work: args.work.canonicalize()?,
    };
    let info = suite.mf.info()?;
    let load_before = loadavg();
    let mut cells: Vec<Cell> = Vec::new();
    for (template, label) in [("busybox", "bb"), (BIG, "big")] {
        for &mb in &args.sizes {
            cells.push(Cell {
                template: template.into(),
                mb,
                instance: format!("snap-{label}-{mb}"),
                ..Cell::default()
            });
        }
    }

    let started = Instant::now();
    let result = measure(&suite, &mut cells);
    // Clean up whatever happened: the instances (with their snapshots) and the big template.
    let mut cleanup_errors = Vec::new();
    let instances = suite.mf.names(&["list", "--json"]).unwrap_or_default();
    for c in cells.iter().filter(|c| instances.contains(&c.instance)) {
        if let Err(e) = suite.mf.call(&["rm", "--force", &c.instance]) {
            cleanup_errors.push(e.to_string());
        }
    }
    let templates = suite
        .mf
        .names(&["template", "list", "--json"])
        .unwrap_or_default();
    if templates.iter().any(|t| t == BIG)
        && let Err(e) = suite.mf.call(&["template", "rm", BIG])
    {
        cleanup_errors.push(e.to_string());
    }
    let _ = suite.quiesce();
    let (import, filler, big_tree, busybox_tree) = result?;
    if !cleanup_errors.is_empty() {
        return Err(io::Error::other(format!(
            "clean-up: {}",
            cleanup_errors.join("; ")
        )));
    }
    report(
        args,
        &info,
        &cells,
        import,
        filler,
        big_tree,
        busybox_tree,
        &load_before,
        started.elapsed(),
    )
}

type Setup = (Duration, fsutil::Filler, Usage, Usage);

fn measure(suite: &Suite, cells: &mut [Cell]) -> io::Result<Setup> {
    let args = suite.args;
    note(
        args,
        &format!(
            "mayfly-bench: generating and importing {BIG} ({} MiB, seed {})…",
            args.big_mb, args.seed
        ),
    );
    let busybox_tree = fsutil::usage(&suite.mf.single_layer(&suite.state, "busybox")?)?;
    let (import, filler, big_tree) = suite.make_big_template()?;
    note(
        args,
        &format!(
            "mayfly-bench: launching {} persistent instances and writing their changes…",
            cells.len()
        ),
    );
    for c in cells.iter_mut() {
        suite.launch(c)?;
    }
    let total = args.warmup + args.runs;
    note(
        args,
        &format!(
            "mayfly-bench: {} warm-up + {} measured rounds over {} instances…",
            args.warmup,
            args.runs,
            cells.len()
        ),
    );
    let n = cells.len();
    for round in 0..total {
        let keep = round >= args.warmup;
        for i in 0..n {
            let c = &mut cells[(i + round) % n];
            suite.visit(c, round, keep)?;
        }
        eprint!("\r  round {}/{total}", round + 1);
    }
    eprintln!();
    Ok((import, filler, big_tree, busybox_tree))
}

/// Least-squares fit of y = a + b·x; returns (a, b, r²).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let a = my - b * mx;
    let r2 = if sxx > 0.0 && syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        f64::NAN
    };
    (a, b, r2)
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    info: &serde_json::Value,
    cells: &[Cell],
    import: Duration,
    filler: fsutil::Filler,
    big_tree: Usage,
    busybox_tree: Usage,
    load_before: &str,
    took: Duration,
) -> io::Result<()> {
    type Pick = fn(&Cell) -> &Series;
    let ops: [(&str, Pick); 7] = [
        ("snapshot_create", |c| &c.snapshot),
        ("snapshot_frozen", |c| &c.frozen),
        ("clone_snapshot", |c| &c.clone_snapshot),
        ("clone_running", |c| &c.clone_running),
        ("publish", |c| &c.publish),
        ("cp_a", |c| &c.cp),
        ("cp_a_syncfs", |c| &c.cp_sync),
    ];
    let cell_json: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            let mut o = json!({
                "template": c.template,
                "changed_mib": c.mb,
                "instance": c.instance,
                "snapshot_size_bytes": c.snapshot_size,
                "snapshot_entries": c.snapshot_entries,
                "root_allocated_bytes": c.root.allocated,
                "root_apparent_bytes": c.root.apparent,
                "root_entries": c.root.entries,
                "disk_added_bytes_median": {
                    "snapshot": c.disk_snapshot.median(),
                    "clone_snapshot": c.disk_clone_snapshot.median(),
                    "clone_running": c.disk_clone_running.median(),
                    "publish": c.disk_publish.median(),
                },
            });
            for (k, f) in ops {
                o[k] = f(c).json();
            }
            o
        })
        .collect();

    // Claims.
    let by = |t: &str, mb: u64| cells.iter().find(|c| c.template == t && c.mb == mb);
    let mut constant = Vec::new();
    for &mb in &args.sizes {
        if let (Some(a), Some(b)) = (by("busybox", mb), by(BIG, mb)) {
            constant.push(json!({
                "changed_mib": mb,
                "snapshot_big/busybox": round3(b.snapshot.median() / a.snapshot.median()),
                "clone_snapshot_big/busybox": round3(b.clone_snapshot.median() / a.clone_snapshot.median()),
                "clone_running_big/busybox": round3(b.clone_running.median() / a.clone_running.median()),
                "cp_a_big/busybox": round3(b.cp.median() / a.cp.median()),
                "snapshot/cp_a_busybox": round3(a.snapshot.median() / a.cp.median()),
                "snapshot/cp_a_big": round3(b.snapshot.median() / b.cp.median()),
                "clone_running/cp_a_big": round3(b.clone_running.median() / b.cp.median()),
            }));
        }
    }
    let mut linear = Vec::new();
    for t in ["busybox", BIG] {
        for (k, f) in ops {
            let pts: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.template == t && !f(c).is_empty())
                .map(|c| (c.mb as f64, f(c).median()))
                .collect();
            if pts.len() >= 2 {
                let (a, b, r2) = fit(&pts);
                linear.push(json!({
                    "template": t, "op": k,
                    "intercept_ms": round3(a), "ms_per_mib": round3(b), "r2": round3(r2),
                }));
            }
        }
    }

    let results = json!({
        "suite": "snapshots",
        "kernel": crate::sys::uname(),
        "cpus": crate::sys::online_cpus(),
        "cgroup_mode": crate::cgroup_mode(),
        "mayfly_version": info["version"],
        "mayfly_cgroup_mode": info["cgroup_mode"],
        "mayfly_user_namespaces": info["user_namespaces"],
        "runs": args.runs,
        "warmup": args.warmup,
        "order": "rounds; each visits every instance (rotating start) and times snapshot create, clone --snapshot, clone, publish, cp -a (+ syncfs); trash drained and syncfs before each",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "seconds": round3(took.as_secs_f64()),
        "big_template": {
            "name": BIG,
            "seed": args.seed,
            "filler_files": filler.files,
            "filler_dirs": filler.dirs,
            "filler_bytes": filler.bytes,
            "tree_apparent_bytes": big_tree.apparent,
            "tree_allocated_bytes": big_tree.allocated,
            "tree_entries": big_tree.entries,
            "import_ms": round3(import.as_secs_f64() * 1000.0),
        },
        "busybox_layer": {
            "apparent_bytes": busybox_tree.apparent,
            "allocated_bytes": busybox_tree.allocated,
            "entries": busybox_tree.entries,
        },
        "cells": cell_json,
        "constant_in_template_size": constant,
        "linear_fit_of_medians": linear,
    });
    if crate::emit_json(args, &results)? {
        return Ok(());
    }

    let mut out = io::stdout().lock();
    writeln!(out)?;
    writeln!(out, "kernel            {}", crate::sys::uname())?;
    writeln!(out, "cpus              {}", crate::sys::online_cpus())?;
    writeln!(
        out,
        "mayfly            {} ({} cgroups, user namespaces {})",
        info["version"].as_str().unwrap_or("?"),
        info["cgroup_mode"].as_str().unwrap_or("?"),
        info["user_namespaces"]
    )?;
    writeln!(
        out,
        "templates         busybox: {} in {} entries; {BIG}: {} in {} entries ({} filler files, seed {}), imported in {}",
        fmt_bytes(busybox_tree.apparent as f64),
        busybox_tree.entries,
        fmt_bytes(big_tree.apparent as f64),
        big_tree.entries,
        filler.files,
        args.seed,
        fmt_ms(import.as_secs_f64() * 1000.0)
    )?;
    writeln!(
        out,
        "rounds            {} measured after {} warm-up; {:.0} s in all",
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
        "Wall time per CLI call (median / p90); frozen = what `snapshot create` reports (median)"
    )?;
    writeln!(
        out,
        "{:<16} {:>19} {:>8} {:>19} {:>19} {:>19} {:>19} {:>10}",
        "template  MiB",
        "snapshot create",
        "frozen",
        "clone --snapshot",
        "clone (running)",
        "publish",
        "cp -a (root)",
        "cp -a+sync"
    )?;
    let mp = |s: &Series| {
        if s.is_empty() {
            "-".to_string()
        } else {
            format!("{} / {}", fmt_ms(s.median()), fmt_ms(s.p90()))
        }
    };
    for c in cells {
        writeln!(
            out,
            "{:<10} {:>5} {:>19} {:>8} {:>19} {:>19} {:>19} {:>19} {:>10}",
            c.template,
            c.mb,
            mp(&c.snapshot),
            fmt_ms(c.frozen.median()),
            mp(&c.clone_snapshot),
            mp(&c.clone_running),
            mp(&c.publish),
            mp(&c.cp),
            fmt_ms(c.cp_sync.median())
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Disk: bytes added to the state directory (allocated, median) against the whole root"
    )?;
    writeln!(
        out,
        "{:<16} {:>11} {:>11} {:>11} {:>11} {:>11} {:>12} {:>9}",
        "template  MiB",
        "changed",
        "snapshot",
        "clone -s",
        "clone",
        "publish",
        "whole root",
        "snap/root"
    )?;
    for c in cells {
        writeln!(
            out,
            "{:<10} {:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>12} {:>8.1}%",
            c.template,
            c.mb,
            fmt_bytes(c.snapshot_size as f64),
            fmt_bytes(c.disk_snapshot.median()),
            fmt_bytes(c.disk_clone_snapshot.median()),
            fmt_bytes(c.disk_clone_running.median()),
            fmt_bytes(c.disk_publish.median()),
            fmt_bytes(c.root.allocated as f64),
            c.disk_snapshot.median() / c.root.allocated as f64 * 100.0
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Same changes, {BIG} / busybox (median ratio; ~1 = independent of the template's size)"
    )?;
    for v in &constant {
        writeln!(
            out,
            "  {:>4} MiB: snapshot {:.2}x, clone --snapshot {:.2}x, clone {:.2}x;  cp -a {:.2}x",
            v["changed_mib"],
            v["snapshot_big/busybox"].as_f64().unwrap_or(f64::NAN),
            v["clone_snapshot_big/busybox"].as_f64().unwrap_or(f64::NAN),
            v["clone_running_big/busybox"].as_f64().unwrap_or(f64::NAN),
            v["cp_a_big/busybox"].as_f64().unwrap_or(f64::NAN),
        )?;
    }
    writeln!(out, "Against cp -a of the whole root (median ratio)")?;
    for v in &constant {
        writeln!(
            out,
            "  {:>4} MiB: snapshot/cp -a busybox {:.2}x, {BIG} {:.3}x; clone/cp -a {BIG} {:.3}x",
            v["changed_mib"],
            v["snapshot/cp_a_busybox"].as_f64().unwrap_or(f64::NAN),
            v["snapshot/cp_a_big"].as_f64().unwrap_or(f64::NAN),
            v["clone_running/cp_a_big"].as_f64().unwrap_or(f64::NAN),
        )?;
    }
    writeln!(
        out,
        "Linear fit of the medians against changed MiB (ms = a + b·MiB)"
    )?;
    for v in &linear {
        writeln!(
            out,
            "  {:<8} {:<16} a {:>8.1} ms   b {:>6.2} ms/MiB   r² {:.3}",
            v["template"].as_str().unwrap_or(""),
            v["op"].as_str().unwrap_or(""),
            v["intercept_ms"].as_f64().unwrap_or(f64::NAN),
            v["ms_per_mib"].as_f64().unwrap_or(f64::NAN),
            v["r2"].as_f64().unwrap_or(f64::NAN),
        )?;
    }
    Ok(())
}
