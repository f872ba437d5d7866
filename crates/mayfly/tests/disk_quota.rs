//! Disk limits (issue 22): project quotas on the state filesystem.
//!
//! The driver-level tests run the container driver and its own forker on a loop-mounted image
//! with project quotas (ext4, and xfs when xfsprogs is installed): writing past an instance's
//! limit gives ENOSPC inside it while the host, the template and another instance go on
//! writing; raising and lifting the limit take effect at once; usage is reported; nothing is
//! left in the quota file, the mount table or the loop devices. The daemon-level tests drive
//! the CLI (`launch --disk`, `set`, `stats`). Where the state filesystem has no project
//! quotas (as on this machine) the fallback, an image per instance, is tested in
//! `disk_image.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::forker_bench::{ForkerBench, Layout, Sweep, groups};
use common::quota_fs::{QuotaFs, QuotaKind};
use mayfly_driver::cgroup::CgroupLayout;
use mayfly_driver::container::ContainerDriver;
use mayfly_driver::{Driver, DriverEvent, InitStdio, InstanceSpec, NetworkMode, ProcessSpec};

const MIB: u64 = 1 << 20;

fn process(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
    }
}

/// A forker and a container driver on a state directory that is a quota filesystem (see
/// `common/forker_bench.rs`).
type Bench = ForkerBench;

impl ForkerBench {
    /// On a fresh quota filesystem of `kind`.
    fn new(kind: QuotaKind, name: &str) -> Bench {
        Self::on(Some(kind), name)
    }

    /// On a quota filesystem of `kind`, or a plain directory of /tmp.
    fn on(kind: Option<QuotaKind>, name: &str) -> Bench {
        Self::create(name, Layout::Quota(kind), Sweep::Remove)
    }

    fn spec(&self, id: &str, args: &[&str]) -> InstanceSpec {
        let dir = self.dir(id);
        InstanceSpec {
            id: id.to_owned(),
            hostname: id.to_owned(),
            layers: vec![self.layer.clone()],
            instance_dir: dir.clone(),
            writable: dir.join("upper-1"),
            new_identity: false,
            network: NetworkMode::Isolated,
            interfaces: Vec::new(),
            binds: vec![],
            idmap: None,
            process: process(args),
            init: false,
            limits: Default::default(),
            user_data: None,
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state.join("instances").join(id)
    }

    fn prepare(&self, id: &str) {
        std::fs::create_dir_all(self.dir(id)).unwrap();
        let s = self.spec(id, &["sleep", "600"]);
        self.driver.prepare_writable(&s, &self.trash).unwrap();
    }

    fn start(&self, id: &str) {
        self.start_with(id, &["sleep", "600"]);
    }

    fn start_with(&self, id: &str, args: &[&str]) {
        let s = self.spec(id, args);
        self.rt
            .block_on(self.driver.start(s, InitStdio::Log { max_bytes: 1 << 20 }))
            .expect("start");
    }

    /// Runs `sh -c script` in instance `id`; its exit code. Its stderr goes to a host file
    /// outside the quota filesystem (inside, the message of a full quota could not be written).
    fn exec(&mut self, id: &str, exec_id: u64, script: &str) -> i32 {
        let null = || std::fs::File::open("/dev/null").unwrap().into();
        let err = std::fs::File::create(self.stderr_path(id)).unwrap();
        self.rt
            .block_on(self.driver.exec(
                id,
                exec_id,
                process(&["sh", "-c", script]),
                vec![null(), null(), err.into()],
            ))
            .expect("exec");
        let events = &mut self.events;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), async {
                while let Some(e) = events.recv().await {
                    if let DriverEvent::ExecExited { exec_id: e, status } = e
                        && e == exec_id
                    {
                        return status.code;
                    }
                }
                panic!("events ended")
            })
            .await
            .expect("the exec ends")
        })
    }

    fn stderr_path(&self, id: &str) -> PathBuf {
        self.tmp.path().join(format!("{id}.stderr"))
    }

    /// What the last exec in `id` wrote to its stderr.
    fn stderr(&self, id: &str) -> String {
        std::fs::read_to_string(self.stderr_path(id)).unwrap_or_default()
    }

    fn stop(&mut self, id: &str) {
        self.rt.block_on(self.driver.kill(id)).unwrap();
        let events = &mut self.events;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(e) = events.recv().await {
                    if matches!(e, DriverEvent::Exited { id: ref i, .. } if i == id) {
                        return;
                    }
                }
            })
            .await
            .expect("the instance ends");
        });
        self.rt.block_on(self.driver.release(id)).unwrap();
    }

    /// Stops the forker, removes the test's cgroups, unmounts the filesystem and says what
    /// was left.
    fn finish(mut self) {
        self.end_forker();
        let problems = self.fs.take().map(QuotaFs::finish).unwrap_or_default();
        assert!(problems.is_empty(), "left behind: {problems:?}");
        assert!(
            groups(&self.parent).is_empty(),
            "cgroups left: {:?}",
            groups(&self.parent)
        );
    }
}

fn quota_of(dir: &Path) -> (u32, mayfly_sys::quota::ProjectQuota) {
    let id = mayfly_driver::quota::DiskQuotas::project_id(dir)
        .unwrap()
        .expect("the instance directory has a project");
    let f = std::fs::File::open(dir).unwrap();
    (id, mayfly_sys::quota::get_project_quota(&f, id).unwrap())
}

fn write_on_host(path: &Path, mib: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![7u8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&block)?;
    }
    f.sync_all()
}

fn a_write_past_the_limit_gets_enospc_and_nothing_else_is_affected(kind: QuotaKind, name: &str) {
    if let Some(option) = kind.kernel_lacks_quota() {
        eprintln!(
            "NOT RUN: this kernel ({}) was built without {option}: it cannot mount {kind:?} with project quotas, so the enforcement cannot be tested here (project_ids_* tests cover what works without it)",
            rustix::system::uname().release().to_string_lossy()
        );
        return;
    }
    let mut b = Bench::new(kind, name);
    assert_eq!(b.driver.disk_quota_unsupported(), None);
    let (a, other) = (format!("{name}-a"), format!("{name}-b"));
    b.prepare(&a);
    b.prepare(&other);
    // Content made before the limit is stamped into the project (bounded walk).
    write_on_host(&b.dir(&a).join("upper-1/before"), 4).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", b.dir(&a).join("upper-1/link")).unwrap();
    b.driver
        .set_disk_quota(&b.dir(&a), Some(32 * MIB))
        .expect("set a disk limit");
    let (project, q) = quota_of(&b.dir(&a));
    assert!(mayfly_driver::quota::PROJECT_IDS.contains(&project));
    assert_eq!(q.space_limit, 32 * MIB);
    assert!(
        q.space_used >= 4 * MIB,
        "the existing file is counted: {q:?}"
    );
    let template_before =
        mayfly_sys::quota::project_of(std::fs::File::open(&b.layer).unwrap()).unwrap();
    b.start(&a);
    b.start(&other);

    // Past the limit: ENOSPC inside.
    let code = b.exec(&a, 1, "dd if=/dev/zero of=/big bs=1M count=64 && sync");
    assert_ne!(code, 0, "a write past the limit succeeded");
    // xfs reports a full project as ENOSPC; ext4's generic quota code may say EDQUOT.
    let err = b.stderr(&a);
    let full = err.contains("No space left on device")
        || (kind == QuotaKind::Ext4 && err.contains("Disk quota exceeded"));
    assert!(full, "{err}");
    let used = b.driver.disk_usage(&b.dir(&a)).unwrap().expect("usage");
    assert!(
        (28 * MIB..=33 * MIB).contains(&used),
        "usage {used} against a 32 MiB limit"
    );
    // Another instance, the host and the template are unaffected.
    assert_eq!(
        b.exec(&other, 2, "dd if=/dev/zero of=/big bs=1M count=64 && sync"),
        0,
        "the other instance cannot write: {}",
        b.stderr(&other)
    );
    assert_eq!(b.driver.disk_usage(&b.dir(&other)).unwrap(), None);
    write_on_host(&b.state.join("host-file"), 64).expect("the host writes past the limit");
    std::fs::remove_file(b.state.join("host-file")).unwrap();
    assert_eq!(
        mayfly_sys::quota::project_of(std::fs::File::open(&b.layer).unwrap()).unwrap(),
        template_before,
        "the template's project changed"
    );

    // Raised: the write goes through; lowered under the use: the next write fails.
    b.driver
        .set_disk_quota(&b.dir(&a), Some(128 * MIB))
        .unwrap();
    assert_eq!(
        quota_of(&b.dir(&a)).0,
        project,
        "the project id is read back"
    );
    let code = b.exec(
        &a,
        3,
        "rm /big && dd if=/dev/zero of=/big bs=1M count=64 && sync",
    );
    assert_eq!(code, 0, "after raising: {}", b.stderr(&a));
    b.driver.set_disk_quota(&b.dir(&a), Some(40 * MIB)).unwrap();
    assert_ne!(
        b.exec(&a, 4, "dd if=/dev/zero of=/more bs=1M count=4 && sync"),
        0
    );
    // Lifted: no limit, no usage reported, writes go through.
    b.driver.set_disk_quota(&b.dir(&a), None).unwrap();
    assert_eq!(b.driver.disk_usage(&b.dir(&a)).unwrap(), None);
    assert_eq!(quota_of(&b.dir(&a)).1.space_limit, 0);
    let code = b.exec(&a, 5, "dd if=/dev/zero of=/more bs=1M count=16 && sync");
    assert_eq!(code, 0, "after lifting: {}", b.stderr(&a));

    // Removed: the project holds nothing and has no limit (no quota record left).
    b.stop(&a);
    b.stop(&other);
    for id in [&a, &other] {
        std::fs::remove_dir_all(b.dir(id)).unwrap();
    }
    let f = std::fs::File::open(&b.state).unwrap();
    assert_eq!(
        mayfly_sys::quota::get_project_quota(&f, project).unwrap(),
        Default::default(),
        "project {project} keeps usage or a limit"
    );
    drop(f);
    b.finish();
}

#[test]
fn ext4_project_quota_limits_an_instance_only() {
    a_write_past_the_limit_gets_enospc_and_nothing_else_is_affected(QuotaKind::Ext4, "dq-ext4");
}

#[test]
fn xfs_project_quota_limits_an_instance_only() {
    if !QuotaKind::Xfs.available() {
        eprintln!("NOT RUN: mkfs.xfs missing (scripts/install-deps installs xfsprogs)");
        return;
    }
    a_write_past_the_limit_gets_enospc_and_nothing_else_is_affected(QuotaKind::Xfs, "dq-xfs");
}

/// Project ids work without quotas (only the limits need them): an instance directory gets an
/// unused id of mayfly's range with the inherit flag, what it holds is stamped (directories and
/// regular files; symbolic links, whiteouts and fifos are skipped, never followed), new files
/// inherit it, the id is read back rather than chosen again, the walk is bounded, and a rename
/// into the directory from outside it fails with EXDEV (why mayfly makes an instance's files
/// inside its directory).
fn project_ids_label_an_instance_directory(kind: QuotaKind) {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::Builder::new()
        .prefix("mfq-")
        .tempdir_in("/tmp")
        .unwrap();
    let state = tmp.path().join("state");
    let fs = QuotaFs::mount_labels_only(kind, &tmp.path().join("img"), &state);
    let quotas = mayfly_driver::quota::DiskQuotas::probe(&state);
    let dir = state.join("instances/abc");
    let upper = dir.join("upper-1");
    std::fs::create_dir_all(upper.join("etc/deep")).unwrap();
    std::fs::write(upper.join("etc/deep/file"), b"x").unwrap();
    std::fs::write(state.join("outside"), b"y").unwrap();
    std::os::unix::fs::symlink(state.join("outside"), upper.join("link")).unwrap();
    let fifo = upper.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let whiteout = upper.join("gone");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &whiteout,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let project = |p: &Path| {
        let f = rustix::fs::open(
            p,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        mayfly_sys::quota::project_of(&f).unwrap()
    };

    // Bounded: too many entries is an error naming the bound, and the directory is left
    // without a project, so that the next call stamps everything.
    let err = quotas.assign_project(&dir, 3).unwrap_err();
    assert!(
        mayfly_driver::error_chain(&err).contains("more than 3 entries"),
        "{}",
        mayfly_driver::error_chain(&err)
    );
    assert_eq!(project(&dir), (0, false));

    let id = quotas.assign_project(&dir, 1000).unwrap();
    assert!(mayfly_driver::quota::PROJECT_IDS.contains(&id), "{id}");
    for d in [&dir, &upper, &upper.join("etc"), &upper.join("etc/deep")] {
        assert_eq!(project(d), (id, true), "{}", d.display());
    }
    assert_eq!(project(&upper.join("etc/deep/file")), (id, false));
    // The link was not followed: its target keeps the default project.
    assert_eq!(project(&state.join("outside")).0, 0);
    // New files inherit; the id is read back.
    std::fs::write(upper.join("etc/new"), b"z").unwrap();
    assert_eq!(project(&upper.join("etc/new")).0, id);
    assert_eq!(quotas.assign_project(&dir, 1000).unwrap(), id);
    assert_eq!(
        mayfly_driver::quota::DiskQuotas::project_id(&dir).unwrap(),
        Some(id)
    );
    // Another directory gets another id.
    let other = state.join("instances/def");
    std::fs::create_dir_all(&other).unwrap();
    assert_ne!(quotas.assign_project(&other, 1000).unwrap(), id);
    // A rename in from outside fails (EXDEV); inside the directory it works.
    let err = std::fs::rename(state.join("outside"), upper.join("moved")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    std::fs::rename(upper.join("etc/new"), upper.join("renamed")).unwrap();
    assert_eq!(
        std::fs::metadata(upper.join("renamed")).unwrap().dev(),
        std::fs::metadata(&state).unwrap().dev()
    );

    // No limits without quotas: refused with the reason, usage none.
    let why = quotas.unsupported().expect("no quotas on this mount");
    match kind.kernel_lacks_quota() {
        Some(option) => assert!(why.contains(&format!("built without {option}")), "{why}"),
        None => assert!(why.contains("mounted without project quotas"), "{why}"),
    }
    assert!(quotas.set(&dir, Some(64 * MIB)).is_err());
    assert_eq!(quotas.usage(&dir).unwrap(), None);
    let problems = fs.finish();
    assert!(problems.is_empty(), "left behind: {problems:?}");
}

#[test]
fn project_ids_label_an_instance_directory_on_ext4() {
    if let Some(option) = QuotaKind::Ext4.kernel_lacks_quota() {
        // ext4 refuses to mount a filesystem with the `project` feature read-write then.
        eprintln!(
            "NOT RUN: this kernel was built without {option}: it cannot mount ext4 with project ids"
        );
        return;
    }
    project_ids_label_an_instance_directory(QuotaKind::Ext4);
}

#[test]
fn project_ids_label_an_instance_directory_on_xfs() {
    if !QuotaKind::Xfs.available() {
        eprintln!("NOT RUN: mkfs.xfs missing (scripts/install-deps installs xfsprogs)");
        return;
    }
    project_ids_label_an_instance_directory(QuotaKind::Xfs);
}

/// This machine's root filesystem is ext4 without project quotas: the driver says why and how
/// to get them, refuses a limit and lifts nothing without error.
#[test]
fn without_project_quotas_the_driver_says_why() {
    let tmp = tempfile::Builder::new()
        .prefix("mfq-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (tx, _events) = tokio::sync::mpsc::channel(4);
    let exe = env!("CARGO_BIN_EXE_mayfly");
    let driver = ContainerDriver::new(tmp.path(), Path::new(exe), "unused", CgroupLayout::Auto, tx);
    // The driver falls back to a filesystem image per instance (tests/disk_image.rs), so it
    // refuses nothing here; the project-quota mechanism says why it cannot serve.
    assert_eq!(driver.disk_quota_unsupported(), None);
    let quotas = mayfly_driver::quota::DiskQuotas::probe(tmp.path());
    let why = quotas
        .unsupported()
        .expect("the root filesystem has no project quotas")
        .to_owned();
    let root_fs = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(" - ").nth(1).map(str::to_owned))
        .unwrap();
    if let Some(option) = QuotaKind::Ext4
        .kernel_lacks_quota()
        .filter(|_| root_fs.starts_with("ext4 "))
    {
        assert!(
            why.contains(&format!("this kernel was built without {option}")),
            "{why}"
        );
    } else if root_fs.starts_with("ext4 ") {
        let dev = root_fs.split(' ').nth(1).unwrap();
        assert!(
            why.contains("on ext4 mounted without project quotas")
                && why.contains(&format!("tune2fs -O project,quota {dev}"))
                && why.contains("prjquota")
                && why.contains("xfs"),
            "{why}"
        );
    }
    assert!(why.contains(&tmp.path().display().to_string()), "{why}");
    let dir = tmp.path().join("instances/x");
    std::fs::create_dir_all(&dir).unwrap();
    let err = quotas.set(&dir, Some(64 * MIB)).unwrap_err();
    assert!(mayfly_driver::error_chain(&err).contains(&why), "{err}");
    quotas.set(&dir, None).expect("nothing to lift");
    driver.set_disk_quota(&dir, None).expect("nothing to lift");
    assert_eq!(driver.disk_usage(&dir).unwrap(), None);
    driver.release_disk(&dir).expect("nothing to release");
}

/// A static probe that calls `quotactl_fd(2)` (Q_GETINFO of project quotas, which needs no
/// privilege) and `quotactl(2)` on `/` and prints both errnos.
fn quotactl_probe() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("q.c");
    std::fs::write(
        &src,
        "#include <errno.h>\n#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n\
         #include <sys/syscall.h>\n\
         int main(void) {\n\
           char buf[512]; int fd = open(\"/\", O_RDONLY | O_DIRECTORY);\n\
           long a = syscall(443, fd, (0x800005 << 8) | 2, 0, buf); int ea = a < 0 ? errno : 0;\n\
           long b = syscall(SYS_quotactl, (0x800005 << 8) | 2, \"/\", 0, buf);\n\
           int eb = b < 0 ? errno : 0;\n\
           printf(\"quotactl_fd %d quotactl %d\\n\", ea, eb); return 0;\n}\n",
    )
    .unwrap();
    let bin = dir.path().join("q");
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc (build-essential, scripts/install-deps)");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&bin).unwrap()
}

/// Instances cannot reach the quota system calls at all: both are refused by the seccomp
/// filter with EPERM (without it, `quotactl_fd` on the overlay root would answer ENOSYS).
#[test]
fn instances_cannot_call_quotactl_fd() {
    use std::os::unix::fs::PermissionsExt;
    let mut b = Bench::on(None, "dq-seccomp");
    let probe = b.layer.join("bin/quota-probe");
    std::fs::write(&probe, quotactl_probe()).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = "dq-seccomp-a";
    b.prepare(id);
    b.start_with(id, &["/bin/quota-probe"]);
    let events = &mut b.events;
    b.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(e) = events.recv().await {
                if matches!(e, DriverEvent::Exited { id: ref i, .. } if i == id) {
                    return;
                }
            }
        })
        .await
        .expect("the probe ends");
    });
    b.rt.block_on(b.driver.release(id)).unwrap();
    let log = std::fs::read_to_string(b.dir(id).join("console.log")).unwrap();
    assert_eq!(
        log.trim(),
        format!("quotactl_fd {0} quotactl {0}", libc::EPERM),
        "the quota system calls are not refused inside"
    );
    b.finish();
}

// ---- through the daemon and the CLI ----------------------------------------------------------

/// The CLI contract of issue 22 on a state directory with project quotas (needs a kernel
/// with quota support: see the driver-level tests' `NOT RUN` note).
#[test]
fn launch_with_disk_limits_the_instance_through_the_cli() {
    if let Some(option) = QuotaKind::Ext4.kernel_lacks_quota() {
        eprintln!("NOT RUN: this kernel was built without {option}: no project quotas on ext4");
        return;
    }
    let d = common::TestDaemon::start_on_quota_fs(QuotaKind::Ext4, &[]);
    d.ok(&[
        "launch", "busybox", "--name", "a", "--disk", "64M", "--", "sleep", "1000",
    ]);
    d.ok(&["launch", "busybox", "--name", "b", "--", "sleep", "1000"]);
    let out = d.fails(&[
        "exec",
        "a",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/big",
        "bs=1M",
        "count=100",
    ]);
    assert!(
        out.stderr.contains("No space left on device")
            || out.stderr.contains("Disk quota exceeded"),
        "{out}"
    );
    // The other instance is unaffected.
    d.ok(&[
        "exec",
        "b",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/big",
        "bs=1M",
        "count=100",
    ]);
    let stats = d.json(&["stats", "a", "--json", "--no-stream"]);
    let disk = &stats[0];
    assert!(
        disk.to_string().contains(&(64 * MIB).to_string()),
        "stats show the limit: {stats}"
    );
    // Raised live: the write goes through.
    d.ok(&["set", "a", "disk=256M"]);
    d.ok(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "rm /big; dd if=/dev/zero of=/big bs=1M count=100",
    ]);
    // Lifted.
    d.ok(&["set", "a", "disk=none"]);
    d.ok(&[
        "exec",
        "a",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/big2",
        "bs=1M",
        "count=100",
    ]);
    d.ok(&["rm", "--force", "a"]);
    d.ok(&["rm", "--force", "b"]);
    d.finish();
}
