//! The controllers against this host's kernel (as root): a group under a test parent of its
//! own gets limits, which are read back from the kernel's files, a process runs in it, its
//! usage is read, the limits are lifted, and everything goes again.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_api::{Cpus, IoMax, Limits};

use super::super::{CgroupLayout, Cgroups};
use super::io_device;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Kills the children and removes the groups, whatever failed.
struct Cleanup {
    cg: Cgroups,
    groups: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for g in &self.groups {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.cg.try_remove(g).unwrap_or(true) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A shell that waits for a line on its stdin before running `script`, so that it can be put
/// into a group first.
fn held(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(child: &mut Child) {
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

fn pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap()
}

#[test]
fn v1_limits_and_usage_on_the_real_kernel() {
    if !is_root() {
        eprintln!("not root: the real v1 hierarchies cannot be driven");
        return;
    }
    let Ok(cg) = Cgroups::detect_as(CgroupLayout::V1) else {
        eprintln!("this host has no cgroup v1 hierarchy: nothing to drive");
        return;
    };
    let parent = format!("mayfly-unit-limits-v1-{}", std::process::id());
    let rel = format!("{parent}/g");
    let mut guard = Cleanup {
        cg: cg.clone(),
        groups: vec![rel.clone(), parent.clone()],
        children: Vec::new(),
    };
    let dir = |sub: &str| -> PathBuf {
        let at = cg.at(&rel, None);
        at.v1(sub).unwrap_or_else(|| panic!("no {sub} hierarchy"))
    };
    let kernel = |sub: &str, file: &str| -> String {
        fs::read_to_string(dir(sub).join(file))
            .unwrap_or_else(|e| panic!("{sub}/{file}: {e}"))
            .trim()
            .to_owned()
    };
    let dev = io_device(&std::env::temp_dir());
    eprintln!("io device of {}: {dev:?}", std::env::temp_dir().display());
    cg.create(&rel).unwrap();

    let mut limits = Limits {
        cpus: Some(Cpus(500)),
        cpu_weight: Some(50),
        cpuset: Some("0".into()),
        memory: Some(64 << 20),
        memory_reserve: Some(32 << 20),
        swap: None,
        pids: Some(16),
        io_weight: None,
        io_max: dev.as_ref().map(|_| IoMax {
            rbps: Some(1 << 20),
            wiops: Some(50),
            ..IoMax::default()
        }),
        disk: None,
        net_rate: None,
    };
    assert_eq!(cg.check_limits(&parent, &limits, dev.as_deref()), Ok(()));
    let refused = cg.apply_limits(&rel, &limits, dev.as_deref());
    assert!(refused.is_empty(), "{refused:?}");
    let mem = (64u64 << 20).to_string();
    assert_eq!(kernel("memory", "memory.limit_in_bytes"), mem);
    assert_eq!(
        kernel("memory", "memory.soft_limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    if dir("memory").join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            kernel("memory", "memory.memsw.limit_in_bytes"),
            mem,
            "no swap"
        );
    }
    assert_eq!(kernel("memory", "memory.swappiness"), "0");
    assert_eq!(kernel("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(kernel("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(kernel("cpu", "cpu.shares"), "512");
    assert_eq!(kernel("cpuset", "cpuset.cpus"), "0");
    assert_eq!(kernel("pids", "pids.max"), "16");
    if let Some(dev) = &dev {
        let read_bps = kernel("blkio", "blkio.throttle.read_bps_device");
        assert_eq!(read_bps, format!("{dev} {}", 1 << 20));
        let write_iops = kernel("blkio", "blkio.throttle.write_iops_device");
        assert_eq!(write_iops, format!("{dev} 50"));
    }

    // Raising memory and swap together, then lowering both: the kernel refuses a memsw below
    // the memory limit, so this fails unless the writes come in the right order.
    if dir("memory").join("memory.memsw.limit_in_bytes").exists() {
        limits.memory = Some(128 << 20);
        limits.swap = Some(64 << 20);
        let refused = cg.apply_limits(&rel, &limits, dev.as_deref());
        assert!(refused.is_empty(), "raise: {refused:?}");
        assert_eq!(
            kernel("memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        let memsw = kernel("memory", "memory.memsw.limit_in_bytes");
        assert_eq!(memsw, (192u64 << 20).to_string());
        limits.memory = Some(32 << 20);
        limits.memory_reserve = Some(16 << 20);
        limits.swap = None;
        let refused = cg.apply_limits(&rel, &limits, dev.as_deref());
        assert!(refused.is_empty(), "lower: {refused:?}");
        assert_eq!(
            kernel("memory", "memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        let memsw = kernel("memory", "memory.memsw.limit_in_bytes");
        assert_eq!(memsw, (32u64 << 20).to_string());
    } else {
        eprintln!("no memory.memsw.* here (swapaccount=0): the memsw ordering is not exercised");
        limits.memory = Some(32 << 20);
        limits.memory_reserve = Some(16 << 20);
        assert!(cg.apply_limits(&rel, &limits, dev.as_deref()).is_empty());
    }

    // A busy process under a quota of half a CPU: its usage is counted, and bounded.
    guard.children.push(held("while :; do :; done"));
    let busy = pid(&guard.children[0]);
    cg.add_process(&rel, busy).unwrap();
    let start = cg.usage(&rel).unwrap();
    release(&mut guard.children[0]);
    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let u = cg.usage(&rel).unwrap();
    let elapsed = u64::try_from(began.elapsed().as_nanos()).unwrap();
    let used = u.cpu_usage_ns - start.cpu_usage_ns;
    eprintln!("busy loop under cpus=0.5: {used} ns of CPU in {elapsed} ns");
    assert!(used > elapsed / 5, "the busy loop ran: {used} ns");
    assert!(
        used < elapsed * 7 / 10,
        "the quota holds it near half a CPU: {used} ns"
    );
    assert_eq!(u.pids, 1);
    // (v1 does not move what a process had charged when it joins: little is counted yet.)
    assert!(u.memory_bytes < 32 << 20, "{u:?}");
    assert_eq!(u.oom_kills, 0);

    // An allocation past the memory limit: the kernel kills it, and the kill is counted.
    guard.children.push(held(
        "v=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#v}",
    ));
    let hog = pid(&guard.children[1]);
    cg.add_process(&rel, hog).unwrap();
    release(&mut guard.children[1]);
    let status = guard.children[1].wait().unwrap();
    assert!(
        !status.success(),
        "the allocation past the limit was killed: {status}"
    );
    let u = cg.usage(&rel).unwrap();
    assert!(u.oom_kills >= 1, "{u:?}");

    // Lifting everything.
    let refused = cg.apply_limits(&rel, &Limits::default(), dev.as_deref());
    assert!(refused.is_empty(), "{refused:?}");
    let unlimited = kernel("memory", "memory.limit_in_bytes")
        .parse::<u64>()
        .unwrap();
    assert!(unlimited > 1 << 60, "{unlimited}");
    assert_eq!(kernel("cpu", "cpu.cfs_quota_us"), "-1");
    assert_eq!(kernel("cpu", "cpu.shares"), "1024");
    assert_eq!(kernel("pids", "pids.max"), "max");
    let parent_cpus = fs::read_to_string(dir("cpuset").parent().unwrap().join("cpuset.cpus"));
    assert_eq!(kernel("cpuset", "cpuset.cpus"), parent_cpus.unwrap().trim());
    assert_eq!(kernel("blkio", "blkio.throttle.read_bps_device"), "");

    // What this host cannot do is refused, naming the key.
    let weighted = Limits {
        io_weight: Some(200),
        ..Limits::default()
    };
    match cg.check_limits(&parent, &weighted, dev.as_deref()) {
        Ok(()) => eprintln!("this host's blkio has weights"),
        Err(e) => {
            eprintln!("io-weight on this host: {e}");
            assert!(e.contains("--io-weight:"), "{e}");
        }
    }
    let far = Limits {
        cpuset: Some("4095".into()),
        ..Limits::default()
    };
    let e = cg.check_limits(&parent, &far, dev.as_deref()).unwrap_err();
    assert!(e.contains("--cpuset: CPU 4095 is not available"), "{e}");

    drop(guard);
    assert!(!cg.exists(&rel) && !cg.exists(&parent), "the groups went");
}

#[test]
fn v2_limits_on_the_real_unified_hierarchy_or_a_clear_refusal() {
    if !is_root() {
        eprintln!("not root: the real unified hierarchy cannot be driven");
        return;
    }
    let Ok(cg) = Cgroups::detect_as(CgroupLayout::V2) else {
        eprintln!("this host has no cgroup2 mount: no v2 controller to drive");
        return;
    };
    let parent = format!("mayfly-unit-limits-v2-{}", std::process::id());
    let rel = format!("{parent}/g");
    let guard = Cleanup {
        cg: cg.clone(),
        groups: vec![rel.clone(), parent.clone()],
        children: Vec::new(),
    };
    let mount = cg.roots[0].mount.clone();
    let offered = super::v2_available(&mount);
    let limits = Limits {
        memory: Some(64 << 20),
        pids: Some(16),
        cpus: Some(Cpus(500)),
        ..Limits::default()
    };
    cg.create(&rel).unwrap();
    let group = mount.join(&rel);
    let kernel = |file: &str| fs::read_to_string(group.join(file)).map(|s| s.trim().to_owned());
    let usable: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect();
    if usable.is_empty() {
        eprintln!(
            "NO V2 CONTROLLER AVAILABLE: the unified hierarchy at {} offers [{}], none of memory, pids, cpu; the v2 controllers are tested on fake trees only here. Checking that limits are refused clearly.",
            mount.display(),
            offered.join(" ")
        );
        let e = cg.check_limits(&parent, &limits, None).unwrap_err();
        for key in ["memory", "pids", "cpus"] {
            assert!(
                e.contains(&format!("--{key}: the cgroup v2 hierarchy at")),
                "{e}"
            );
        }
        assert!(e.contains("--cgroup-layout auto"), "{e}");
        let refused = cg.apply_limits(&rel, &limits, None);
        let keys: Vec<&str> = refused.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["memory", "cpus", "pids"]);
        // Nothing asked: nothing refused (swap cannot be turned off without the controller).
        assert!(cg.apply_limits(&rel, &Limits::default(), None).is_empty());
        assert_eq!(cg.usage(&rel).unwrap().pids, 0);
    } else {
        eprintln!("v2 controllers available here: {usable:?}");
        let asked = Limits {
            memory: usable.contains(&"memory").then_some(64 << 20),
            pids: usable.contains(&"pids").then_some(16),
            cpus: usable.contains(&"cpu").then_some(Cpus(500)),
            ..Limits::default()
        };
        assert_eq!(cg.check_limits(&parent, &asked, None), Ok(()));
        let refused = cg.apply_limits(&rel, &asked, None);
        assert!(refused.is_empty(), "{refused:?}");
        if asked.memory.is_some() {
            assert_eq!(kernel("memory.max").unwrap(), (64u64 << 20).to_string());
            if group.join("memory.swap.max").exists() {
                assert_eq!(kernel("memory.swap.max").unwrap(), "0");
            }
        }
        if asked.pids.is_some() {
            assert_eq!(kernel("pids.max").unwrap(), "16");
        }
        if asked.cpus.is_some() {
            assert_eq!(kernel("cpu.max").unwrap(), "50000 100000");
        }
        assert!(cg.apply_limits(&rel, &Limits::default(), None).is_empty());
        if asked.memory.is_some() {
            assert_eq!(kernel("memory.max").unwrap(), "max");
        }
        if asked.pids.is_some() {
            assert_eq!(kernel("pids.max").unwrap(), "max");
        }
    }
    drop(guard);
    assert!(!cg.exists(&rel) && !cg.exists(&parent), "the groups went");
}
