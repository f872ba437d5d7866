//! The controllers against fake cgroupfs trees: what is written where, lifting, refusals and
//! usage parsing, for v2 and v1.

use mayfly_api::{Cpus, IoMax, Limits};

use super::fake::{self, GROUP};
use super::io_device_in;

const ALL_V2: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];
const ALL_V1: &[&str] = &["memory", "cpu", "cpuacct", "cpuset", "pids", "blkio"];
const DEV: Option<&str> = Some("254:0");

fn full() -> Limits {
    Limits {
        cpus: Some(Cpus(1500)),
        cpu_weight: Some(200),
        cpuset: Some("1-2".into()),
        memory: Some(256 << 20),
        memory_reserve: Some(64 << 20),
        swap: None,
        pids: Some(64),
        io_weight: Some(500),
        io_max: Some(IoMax {
            rbps: Some(10 << 20),
            wbps: Some(5 << 20),
            riops: None,
            wiops: Some(100),
        }),
        disk: None,
        net_rate: None,
    }
}

fn g(file: &str) -> String {
    format!("unified/{GROUP}/{file}")
}

fn keys(refused: &[(String, String)]) -> Vec<&str> {
    refused.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn v2_writes_each_limit_into_its_file() {
    let f = fake::v2(ALL_V2);
    let refused = f.cg.apply_limits(GROUP, &full(), DEV);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(f.get(&g("memory.max")), (256u64 << 20).to_string());
    assert_eq!(f.get(&g("memory.low")), (64u64 << 20).to_string());
    assert_eq!(f.get(&g("memory.swap.max")), "0", "no swap unless asked");
    assert_eq!(f.get(&g("cpu.max")), "150000 100000");
    assert_eq!(f.get(&g("cpu.weight")), "200");
    assert_eq!(f.get(&g("cpuset.cpus")), "1-2");
    assert_eq!(f.get(&g("pids.max")), "64");
    assert_eq!(f.get(&g("io.weight")), "default 500");
    assert_eq!(
        f.get(&g("io.max")),
        format!(
            "254:0 rbps={} wbps={} riops=max wiops=100",
            10 << 20,
            5 << 20
        )
    );

    let swap = Limits {
        swap: Some(1 << 30),
        ..full()
    };
    assert!(f.cg.apply_limits(GROUP, &swap, DEV).is_empty());
    assert_eq!(f.get(&g("memory.swap.max")), (1u64 << 30).to_string());
}

#[test]
fn v2_absent_limits_are_lifted() {
    let f = fake::v2(ALL_V2);
    assert!(f.cg.apply_limits(GROUP, &full(), DEV).is_empty());
    let refused = f.cg.apply_limits(GROUP, &Limits::default(), DEV);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(f.get(&g("memory.max")), "max");
    assert_eq!(f.get(&g("memory.low")), "0");
    assert_eq!(f.get(&g("memory.swap.max")), "0", "swap stays off");
    assert_eq!(f.get(&g("cpu.max")), "max 100000");
    assert_eq!(f.get(&g("cpu.weight")), "100");
    assert_eq!(f.get(&g("cpuset.cpus")), "", "the parent's CPUs");
    assert_eq!(f.get(&g("pids.max")), "max");
    assert_eq!(f.get(&g("io.weight")), "default 100");
    assert_eq!(
        f.get(&g("io.max")),
        "254:0 rbps=max wbps=max riops=max wiops=max"
    );
}

#[test]
fn v2_refuses_swap_without_swap_accounting() {
    let f = fake::v2(ALL_V2);
    let swap = Limits {
        memory: Some(1 << 30),
        swap: Some(1 << 30),
        ..Limits::default()
    };
    assert!(f.cg.check_limits("mayfly", &swap, DEV).is_ok());
    f.remove("unified/mayfly/memory.swap.max");
    f.remove(&g("memory.swap.max"));
    let e = f.cg.check_limits("mayfly", &swap, DEV).unwrap_err();
    assert!(e.contains("--swap: the kernel accounts no swap"), "{e}");
    assert_eq!(keys(&f.cg.apply_limits(GROUP, &swap, DEV)), ["swap"]);
    // No swap needs no accounting.
    assert!(f.cg.apply_limits(GROUP, &Limits::default(), DEV).is_empty());
}

#[test]
fn v2_uses_bfq_weights_when_the_kernel_has_no_io_weight() {
    let f = fake::v2(ALL_V2);
    f.remove(&g("io.weight"));
    f.set(&g("io.bfq.weight"), "default 100");
    let l = Limits {
        io_weight: Some(5000),
        ..Limits::default()
    };
    assert!(f.cg.apply_limits(GROUP, &l, DEV).is_empty());
    assert_eq!(
        f.get(&g("io.bfq.weight")),
        "default 1000",
        "BFQ's range ends at 1000"
    );
}

#[test]
fn v2_refuses_io_weight_where_the_io_controller_has_no_weight() {
    let f = fake::v2(ALL_V2);
    f.remove("unified/mayfly/io.weight");
    f.remove(&g("io.weight"));
    let e = f.cg.check_limits("mayfly", &full(), DEV).unwrap_err();
    assert!(
        e.contains("--io-weight: this kernel's io controller offers no weight"),
        "{e}"
    );
    assert!(!e.contains("--io-max"), "{e}");
    let refused = f.cg.apply_limits(GROUP, &full(), DEV);
    assert_eq!(keys(&refused), ["io-weight"]);
    assert!(
        f.get(&g("io.max")).starts_with("254:0 rbps="),
        "io-max still applies"
    );
}

#[test]
fn v2_without_controllers_refuses_what_is_set_and_skips_what_is_not() {
    // This build machine's unified tree: no controller mayfly uses.
    let f = fake::v2(&["hugetlb"]);
    assert!(
        f.cg.apply_limits(GROUP, &Limits::default(), DEV).is_empty(),
        "nothing asked, nothing refused"
    );
    let refused = f.cg.apply_limits(GROUP, &full(), DEV);
    assert_eq!(
        keys(&refused),
        [
            "memory",
            "memory-reserve",
            "cpus",
            "cpu-weight",
            "cpuset",
            "pids",
            "io-weight",
            "io-max"
        ]
    );
    let e = f.cg.check_limits("mayfly", &full(), DEV).unwrap_err();
    assert!(
        e.contains("--memory: the cgroup v2 hierarchy at")
            && e.contains("offers no memory controller")
            && e.contains("(it offers: hugetlb)")
            && e.contains("--cgroup-layout auto")
            && e.contains("--pids:"),
        "{e}"
    );
    assert!(f.cg.check_limits("mayfly", &Limits::default(), DEV).is_ok());
}

#[test]
fn v2_checks_cpus_against_the_parent_and_io_max_against_a_device() {
    let f = fake::v2(ALL_V2);
    assert!(f.cg.check_limits("mayfly", &full(), DEV).is_ok());
    let far = Limits {
        cpuset: Some("2-5".into()),
        ..Limits::default()
    };
    let e = f.cg.check_limits("mayfly", &far, DEV).unwrap_err();
    assert!(
        e.contains("--cpuset: CPU 4,5 is not available") && e.contains("0-3"),
        "{e}"
    );
    // Applying refuses too, and writes nothing.
    let refused = f.cg.apply_limits(GROUP, &far, DEV);
    assert_eq!(keys(&refused), ["cpuset"]);
    assert_eq!(f.get(&g("cpuset.cpus")), "");

    let e = f.cg.check_limits("mayfly", &full(), None).unwrap_err();
    assert!(
        e.contains("--io-max: the state directory is on no block device"),
        "{e}"
    );
    assert!(!e.contains("--io-weight"), "weights need no device: {e}");
    assert_eq!(keys(&f.cg.apply_limits(GROUP, &full(), None)), ["io-max"]);
}

#[test]
fn v2_a_value_the_kernel_refuses_is_answered() {
    let f = fake::v2(ALL_V2);
    // A file that cannot be written stands for a value the kernel rejects.
    f.remove(&g("pids.max"));
    std::fs::create_dir(f.root.join(g("pids.max"))).unwrap();
    let refused = f.cg.apply_limits(GROUP, &full(), DEV);
    assert_eq!(keys(&refused), ["pids"]);
    assert!(
        refused[0].1.contains("the kernel refused `64`"),
        "{refused:?}"
    );
}

#[test]
fn v2_usage_is_parsed() {
    let f = fake::v2(ALL_V2);
    f.set(
        &g("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    f.set(&g("memory.current"), "10000000");
    f.set(
        &g("memory.stat"),
        "anon 5\nfile 10\ninactive_file 4000000\nactive_file 1\n",
    );
    f.set(
        &g("memory.events"),
        "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n",
    );
    f.set(&g("pids.current"), "12");
    f.set(
        &g("io.stat"),
        "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n7:0 rbytes=5 wbytes=6 rios=1 wios=1\n",
    );
    let u = f.cg.usage(GROUP).unwrap();
    assert_eq!(u.cpu_usage_ns, 1_500_000);
    assert_eq!(u.memory_bytes, 6_000_000);
    assert_eq!(u.oom_kills, 2);
    assert_eq!(u.pids, 12);
    assert_eq!((u.io_read_bytes, u.io_write_bytes), (105, 206));
    assert!(f.cg.usage("mayfly/gone").is_err());
}

fn m(file: &str) -> String {
    format!("memory/{GROUP}/{file}")
}

fn v1(sub: &str, file: &str) -> String {
    format!("{sub}/{GROUP}/{file}")
}

#[test]
fn v1_writes_each_limit_into_its_file() {
    let f = fake::v1(ALL_V1);
    let l = Limits {
        io_weight: None,
        ..full()
    };
    let refused = f.cg.apply_limits(GROUP, &l, DEV);
    assert!(refused.is_empty(), "{refused:?}");
    let mem = (256u64 << 20).to_string();
    assert_eq!(f.get(&m("memory.limit_in_bytes")), mem);
    assert_eq!(f.get(&m("memory.memsw.limit_in_bytes")), mem, "no swap");
    assert_eq!(f.get(&m("memory.swappiness")), "0");
    assert_eq!(
        f.get(&m("memory.soft_limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(f.get(&v1("cpu", "cpu.cfs_period_us")), "100000");
    assert_eq!(f.get(&v1("cpu", "cpu.cfs_quota_us")), "150000");
    assert_eq!(f.get(&v1("cpu", "cpu.shares")), "2048");
    assert_eq!(f.get(&v1("cpuset", "cpuset.cpus")), "1-2");
    assert_eq!(f.get(&v1("pids", "pids.max")), "64");
    let t = |file: &str| f.get(&v1("blkio", &format!("blkio.throttle.{file}_device")));
    assert_eq!(t("read_bps"), format!("254:0 {}", 10 << 20));
    assert_eq!(t("write_bps"), format!("254:0 {}", 5 << 20));
    assert_eq!(t("read_iops"), "254:0 0");
    assert_eq!(t("write_iops"), "254:0 100");

    let swap = Limits {
        swap: Some(1 << 30),
        ..l
    };
    assert!(f.cg.apply_limits(GROUP, &swap, DEV).is_empty());
    assert_eq!(
        f.get(&m("memory.memsw.limit_in_bytes")),
        ((256u64 << 20) + (1 << 30)).to_string()
    );
    assert_eq!(f.get(&m("memory.swappiness")), "60", "the parent's");
}

#[test]
fn v1_absent_limits_are_lifted() {
    let f = fake::v1(ALL_V1);
    let l = Limits {
        io_weight: None,
        ..full()
    };
    assert!(f.cg.apply_limits(GROUP, &l, DEV).is_empty());
    let refused = f.cg.apply_limits(GROUP, &Limits::default(), DEV);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(f.get(&m("memory.limit_in_bytes")), "-1");
    assert_eq!(f.get(&m("memory.memsw.limit_in_bytes")), "-1");
    assert_eq!(f.get(&m("memory.swappiness")), "0", "swap stays off");
    assert_eq!(f.get(&m("memory.soft_limit_in_bytes")), "-1");
    assert_eq!(f.get(&v1("cpu", "cpu.cfs_quota_us")), "-1");
    assert_eq!(f.get(&v1("cpu", "cpu.shares")), "1024");
    assert_eq!(f.get(&v1("cpuset", "cpuset.cpus")), "0-3", "the parent's");
    assert_eq!(f.get(&v1("pids", "pids.max")), "max");
    let t = |file: &str| f.get(&v1("blkio", &format!("blkio.throttle.{file}_device")));
    for file in ["read_bps", "write_bps", "read_iops", "write_iops"] {
        assert_eq!(t(file), "254:0 0", "{file}");
    }
}

#[test]
fn v1_io_weight_goes_to_the_scheduler_s_file_or_is_refused() {
    // This build machine: blkio with throttling only.
    let f = fake::v1(ALL_V1);
    let e = f.cg.check_limits("mayfly", &full(), DEV).unwrap_err();
    assert!(
        e.contains("--io-weight: this host's v1 blkio controller offers no weight")
            && e.contains("scheduler"),
        "{e}"
    );
    assert!(!e.contains("--memory"), "{e}");
    assert_eq!(keys(&f.cg.apply_limits(GROUP, &full(), DEV)), ["io-weight"]);

    for (file, want) in [("blkio.bfq.weight", "500"), ("blkio.weight", "1000")] {
        let f = fake::v1(ALL_V1);
        f.set(&format!("blkio/{file}"), "100");
        f.set(&format!("blkio/mayfly/{file}"), "100");
        f.set(&v1("blkio", file), "100");
        assert!(f.cg.check_limits("mayfly", &full(), DEV).is_ok());
        assert!(f.cg.apply_limits(GROUP, &full(), DEV).is_empty());
        assert_eq!(f.get(&v1("blkio", file)), want, "{file}");
    }
}

#[test]
fn v1_refuses_swap_it_cannot_bound_and_missing_hierarchies() {
    let f = fake::v1(ALL_V1);
    let swap_alone = Limits {
        swap: Some(1 << 30),
        ..Limits::default()
    };
    let e = f.cg.check_limits("mayfly", &swap_alone, DEV).unwrap_err();
    assert!(
        e.contains("--swap: cgroup v1 limits swap only together with memory"),
        "{e}"
    );
    // No swap at all needs no memory limit.
    let no_swap = Limits {
        swap: Some(0),
        ..Limits::default()
    };
    assert!(f.cg.check_limits("mayfly", &no_swap, DEV).is_ok());

    // A kernel without swap accounting (swapaccount=0).
    f.remove("memory/mayfly/memory.memsw.limit_in_bytes");
    f.remove("memory/memory.memsw.limit_in_bytes");
    let with_mem = Limits {
        memory: Some(1 << 30),
        ..swap_alone.clone()
    };
    let e = f.cg.check_limits("mayfly", &with_mem, DEV).unwrap_err();
    assert!(
        e.contains("--swap: the kernel accounts no swap") && e.contains("swapaccount=1"),
        "{e}"
    );

    let f = fake::v1(&["memory", "cpu", "cpuacct", "cpuset", "blkio"]);
    let e = f.cg.check_limits("mayfly", &full(), DEV).unwrap_err();
    assert!(
        e.contains("--pids: this host has no cgroup v1 hierarchy with the pids controller"),
        "{e}"
    );
}

#[test]
fn v1_usage_is_parsed() {
    let f = fake::v1(ALL_V1);
    f.set(&v1("cpuacct", "cpuacct.usage"), "123456789");
    f.set(&m("memory.usage_in_bytes"), "10000000");
    f.set(
        &m("memory.stat"),
        "cache 1\ninactive_file 9\ntotal_inactive_file 3000000\n",
    );
    f.set(
        &m("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    );
    f.set(&v1("pids", "pids.current"), "9");
    f.set(
        &v1("blkio", "blkio.throttle.io_service_bytes_recursive"),
        "254:0 Read 100\n254:0 Write 200\n254:0 Sync 300\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 300\n7:0 Read 1\n7:0 Write 2\nTotal 303\n",
    );
    let u = f.cg.usage(GROUP).unwrap();
    assert_eq!(u.cpu_usage_ns, 123_456_789);
    assert_eq!(u.memory_bytes, 7_000_000);
    assert_eq!(u.oom_kills, 4);
    assert_eq!(u.pids, 9);
    assert_eq!((u.io_read_bytes, u.io_write_bytes), (101, 202));
}

#[test]
fn the_io_device_is_the_whole_disk() {
    let d = tempfile::tempdir().unwrap();
    let sys = d.path();
    let put = |p: &str, c: &str| {
        std::fs::create_dir_all(sys.join(p).parent().unwrap()).unwrap();
        std::fs::write(sys.join(p), c).unwrap();
    };
    put("devices/sda/dev", "8:0\n");
    put("devices/sda/sda1/dev", "8:1\n");
    put("devices/sda/sda1/partition", "1\n");
    put("devices/vda/dev", "254:0\n");
    let block = sys.join("dev/block");
    std::fs::create_dir_all(&block).unwrap();
    std::os::unix::fs::symlink(sys.join("devices/sda/sda1"), block.join("8:1")).unwrap();
    std::os::unix::fs::symlink(sys.join("devices/vda"), block.join("254:0")).unwrap();
    assert_eq!(io_device_in(&block, 8, 1).as_deref(), Some("8:0"));
    assert_eq!(io_device_in(&block, 254, 0).as_deref(), Some("254:0"));
    assert_eq!(
        io_device_in(&block, 0, 42),
        None,
        "no block device (tmpfs, overlayfs)"
    );
}
