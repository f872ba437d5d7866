//! Import limits and bounded answers: a real compression bomb (a 6 GiB file of zeros in a few
//! hundred KiB of .tar.zst) is refused with an error that names the limit and the flag, while
//! the daemon keeps answering and a running instance keeps working, and leaves nothing behind
//! (no staging tree, no layer, no template, no open journal entry, no growth of the state
//! directory); the same for a bomb inside a `docker save` archive or an OCI layout; too many
//! entries, too deep or too long paths, too large files, archives or totals, and the free-space
//! reserve, each raised by its flag; real templates pass with the defaults; and a client that
//! stops reading a build's output costs the daemon a bounded buffer, then learns how many
//! lines it missed and how the build ended.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::images::{OCI_TAR, docker_save, image_config, write_oci_layout};
use common::imports::{events, import_bytes};
use common::{
    CLI_TIMEOUT, TestDaemon, assert_nothing_created, assert_refused, catalogue, make_rootfs,
    parse_http, poll_until, tar_of, template_names, zstd,
};

// ---- archives ----------------------------------------------------------------------------------

/// A tar header for a regular file.
fn file_header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// One zstd frame (level 19) of `len` zeros.
fn zero_frame(len: usize) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 19).expect("zstd");
    enc.write_all(&vec![0; len]).expect("zstd");
    enc.finish().expect("zstd")
}

/// A compression bomb: a .tar.zst holding one file `zeros` of `size` bytes of zeros (a
/// multiple of 8 MiB). zstd streams may be concatenated frames, so it is one frame with the
/// header, then the same compressed 8 MiB of zeros again and again, then the end-of-archive
/// marker: built in milliseconds, without ever holding or writing the expanded bytes.
fn bomb(size: u64) -> Vec<u8> {
    const FRAME: u64 = 8 << 20;
    assert_eq!(size % FRAME, 0);
    let mut out = zstd(file_header("zeros", size).as_bytes());
    let zeros = zero_frame(8 << 20);
    for _ in 0..size / FRAME {
        out.extend_from_slice(&zeros);
    }
    out.extend_from_slice(&zero_frame(1024));
    out
}

/// A plain tar of regular files (path, content).
fn files_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = file_header("x", data.len() as u64);
        b.append_data(&mut h, path, &data[..]).expect("append");
    }
    b.into_inner().expect("finish the tar")
}

/// A busybox root filesystem as a .tar.zst.
fn rootfs_tar_zst(d: &TestDaemon, tag: &str) -> Vec<u8> {
    let dir = d.dir.join(format!("rootfs-{tag}"));
    make_rootfs(&dir, tag);
    zstd(&tar_of(&dir))
}

// ---- what the state directory holds -----------------------------------------------------------

/// Bytes allocated on disk for everything under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Starts `POST path` with a body of `total` bytes on a raw connection, sending only `head`.
fn start_upload(d: &TestDaemon, path: &str, total: usize, head: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(CLI_TIMEOUT)).expect("timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: mayfly\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {total}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).expect("write request");
    s.write_all(head).expect("write body");
    s
}

/// Reads the whole answer of a raw request.
fn finish_request(mut s: UnixStream) -> (u16, Vec<Value>) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let response = parse_http(&raw).unwrap_or_else(|e| panic!("bad answer ({e})"));
    (response.status, events(&response.body))
}

// ---- the bomb -----------------------------------------------------------------------------------

const SIX_GIB: u64 = 6 << 30;

#[test]
fn a_compression_bomb_is_refused_and_leaves_nothing_behind() {
    // No free-space reserve: the ratio limit alone must stop the bomb, whatever the disk has.
    let mut d = TestDaemon::start_with(&["--import-min-free", "0"]);
    common::launch(&d, "before", &[], None);
    d.sh("before", "echo kept > /root/note");
    let bomb = bomb(SIX_GIB);
    assert!(
        bomb.len() < 400 << 10,
        "the bomb takes {} bytes",
        bomb.len()
    );
    let before = catalogue(&d);
    let usage_before = disk_usage(&d.state);

    // Through the CLI, from a file and from stdin.
    let started = Instant::now();
    let out = import_bytes(&d, "bomb", "bomb.tar.zst", &bomb);
    assert_refused(
        &out,
        "the bomb",
        &[
            "the archive expands more than 200 times",
            "(--import-max-ratio)",
            "raise it with `mayfly daemon --import-max-ratio N`",
            "nothing was imported",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert_nothing_created(&d, &before, "the bomb");
    let out = d.mayfly_stdin(&["template", "import", "bomb", "-"], &bomb);
    assert_refused(&out, "the bomb on stdin", &["(--import-max-ratio)"]);
    assert_nothing_created(&d, &before, "the bomb on stdin");

    // While a bomb's upload is under way (its first bytes sent, the unpacker waiting for
    // more), everything else works: listings, exec, a launch, another import.
    // The header and the first 8 MiB of zeros: below the ratio check's floor, so the import
    // is under way, waiting for more.
    let split = zstd(file_header("zeros", SIX_GIB).as_bytes()).len() + zero_frame(8 << 20).len();
    let conn = start_upload(
        &d,
        "/v1/templates?name=slowbomb",
        bomb.len(),
        &bomb[..split],
    );
    assert!(
        poll_until(Duration::from_secs(10), || !d
            .state_entries("tmp")
            .is_empty()),
        "the slow upload's import did not start"
    );
    let t = Instant::now();
    d.ok(&["list"]);
    d.ok(&["info"]);
    assert_eq!(d.sh("before", "cat /root/note"), "kept\n");
    common::launch(&d, "during", &[], None);
    let out = import_bytes(&d, "real", "real.tar.zst", &rootfs_tar_zst(&d, "real"));
    assert!(out.success(), "an import beside the bomb: {out}");
    d.ok(&["rm", "--force", "during"]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the daemon answered slowly: {:?}",
        t.elapsed()
    );
    assert!(
        !d.state_entries("tmp").is_empty(),
        "the slow import ended before the other requests were made"
    );
    let mut conn = conn;
    // The rest of the bomb may be refused before it is all sent: the daemon reads on (up to
    // 256 MiB) so that the answer arrives.
    conn.write_all(&bomb[split..]).expect("send the rest");
    // The status is the outcome: 413, with the error body.
    let (status, evs) = finish_request(conn);
    assert_eq!(status, 413, "{evs:?}");
    let last = evs.last().expect("an error body");
    let message = last["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("expands more than 200 times") && message.contains("--import-max-ratio"),
        "{evs:?}"
    );
    assert_eq!(last["error"]["code"], "too_large", "{last}");
    let mut expected = before.templates.clone();
    expected.push("real".to_owned());
    expected.sort();
    assert_eq!(template_names(&d), expected);
    d.ok(&["template", "rm", "real"]);
    assert_nothing_created(&d, &before, "the slow bomb");

    // The state directory did not grow (the catalogue and logs may move by a few KiB).
    let usage_after = disk_usage(&d.state);
    assert!(
        usage_after < usage_before + (16 << 20),
        "the state directory grew from {usage_before} to {usage_after} bytes"
    );
    // The instance launched before still works.
    assert_eq!(d.state_of("before").as_deref(), Some("running"));
    assert_eq!(d.sh("before", "cat /root/note"), "kept\n");

    // No journal entry was left open: a restart has nothing to roll back.
    d.stop_daemon();
    let log_len = std::fs::metadata(&d.log).map(|m| m.len()).unwrap_or(0);
    d.restart();
    let log = std::fs::read(&d.log).unwrap_or_default();
    let new = String::from_utf8_lossy(&log[usize::try_from(log_len).unwrap_or(0)..]);
    assert!(
        !new.contains("rolling back") && !new.contains("removing"),
        "the restart found leftovers:\n{new}"
    );
    assert_nothing_created(&d, &before, "after a restart");
    assert_eq!(d.sh("before", "cat /root/note"), "kept\n");
    d.ok(&["rm", "--force", "before"]);
    d.finish();
}

#[test]
fn bombs_inside_images_are_refused_too() {
    // No free-space reserve: the ratio limit alone must stop the bombs, whatever the disk has.
    let d = TestDaemon::start_with(&["--import-min-free", "0"]);
    let before = catalogue(&d);
    let layer_bomb = bomb(SIX_GIB);
    let config = image_config(&[], &["/bin/sh"], &[], "/", &[]);

    // A docker save archive whose only layer is the bomb (uploaded, 400 KiB).
    let save = docker_save(&[&layer_bomb], &config);
    let out = import_bytes(&d, "savebomb", "save.tar", &save);
    assert_refused(
        &out,
        "a docker save bomb",
        &[
            "layer 1 of 1 (sha256:",
            "expands more than 200 times",
            "--import-max-ratio",
        ],
    );
    assert_nothing_created(&d, &before, "a docker save bomb");

    // An OCI layout on the host whose layer is the bomb.
    let layout = d.dir.join("oci-bomb");
    write_oci_layout(&layout, &[(OCI_TAR, layer_bomb.clone())], &config);
    let out = d.mayfly(&[
        "template",
        "import",
        "ocibomb",
        layout.to_str().expect("utf-8"),
    ]);
    assert_refused(
        &out,
        "an OCI layout bomb",
        &["layer 1", "--import-max-ratio"],
    );
    assert_nothing_created(&d, &before, "an OCI layout bomb");

    // Two harmless-looking layers that together unpack to more than the daemon allows: the
    // limit is on their sum.
    let d2 = TestDaemon::start_with(&["--import-max-bytes", "6M"]);
    let before2 = catalogue(&d2);
    let four_mib = |name: &str| files_tar(&[(name.to_owned(), vec![7; 4 << 20])]);
    let (a, b) = (four_mib("a"), four_mib("b"));
    let layout = d2.dir.join("oci-sum");
    write_oci_layout(
        &layout,
        &[(OCI_TAR, a.clone()), (OCI_TAR, b.clone())],
        &config,
    );
    let out = d2.mayfly(&["template", "import", "sum", layout.to_str().expect("utf-8")]);
    assert_refused(
        &out,
        "two layers over the total",
        &[
            "layer 2",
            "unpacks to more than 6 MiB",
            "--import-max-bytes",
        ],
    );
    assert_nothing_created(&d2, &before2, "two layers over the total");
    let layout = d2.dir.join("oci-one");
    write_oci_layout(&layout, &[(OCI_TAR, a)], &config);
    d2.ok(&["template", "import", "one", layout.to_str().expect("utf-8")]);
    d2.finish();

    // An image document larger than any real one is not read.
    let layout = d.dir.join("oci-bigconfig");
    let mut big = image_config(&[], &["/bin/sh"], &[], "/", &[]);
    big.truncate(big.len() - 1);
    big.extend_from_slice(format!(",\"padding\":\"{}\"}}", "p".repeat(5 << 20)).as_bytes());
    write_oci_layout(&layout, &[(OCI_TAR, files_tar(&[]))], &big);
    let out = d.mayfly(&[
        "template",
        "import",
        "bigconfig",
        layout.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("larger than 4 MiB"), "{out}");
    assert_nothing_created(&d, &before, "a 5 MiB config");
    d.finish();
}

// ---- shapes and sizes ---------------------------------------------------------------------------

/// A file `depth` directories deep (`d/d/…/d/f`).
fn deep_tar(depth: usize) -> Vec<u8> {
    let path = format!("{}f", "d/".repeat(depth));
    files_tar(&[(path, b"deep".to_vec())])
}

/// `n` small files.
fn many_files(n: usize) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("f/{i}"), b"x".to_vec())).collect();
    files_tar(&files)
}

#[test]
fn entries_paths_and_sizes_are_limited_and_the_flags_raise_them() {
    let d = TestDaemon::start();
    let before = catalogue(&d);
    // 257 directories deep (a real tree stays below 30).
    let out = import_bytes(&d, "deep", "deep.tar", &deep_tar(257));
    assert_refused(
        &out,
        "a deep path",
        &[
            "it is 258 levels deep, more than 256 (--import-max-depth)",
            "mayfly daemon --import-max-depth N",
        ],
    );
    assert_nothing_created(&d, &before, "a deep path");
    // 5000 bytes in 20 components, each a valid name.
    let long = format!("{}f", format!("{}/", "l".repeat(249)).repeat(20));
    let out = import_bytes(
        &d,
        "long",
        "long.tar",
        &files_tar(&[(long.clone(), b"x".to_vec())]),
    );
    assert_refused(
        &out,
        "a long path",
        &[
            &long[..100],
            "its path is 5001 bytes long, more than 4096 (--import-max-path)",
        ],
    );
    assert_nothing_created(&d, &before, "a long path");
    d.finish();

    let d = TestDaemon::start_with(&[
        "--import-max-depth",
        "300",
        "--import-max-entries",
        "1000",
        "--import-max-file-size",
        "1M",
        "--import-max-bytes",
        "4M",
        "--import-max-upload",
        "16M",
    ]);
    // The deep path passes once the limit is raised.
    let out = import_bytes(&d, "deep", "deep.tar", &deep_tar(257));
    assert!(out.success(), "{out}");
    // 1000 entries pass, 1001 do not.
    let out = import_bytes(&d, "many", "many.tar", &many_files(1000));
    assert!(out.success(), "{out}");
    let before = catalogue(&d);
    let out = import_bytes(&d, "toomany", "toomany.tar", &many_files(1001));
    assert_refused(
        &out,
        "too many entries",
        &[
            "the archive has more than 1000 entries (--import-max-entries)",
            "mayfly daemon --import-max-entries N",
        ],
    );
    assert_nothing_created(&d, &before, "too many entries");
    // A file over the per-file limit, refused at its header.
    let big = files_tar(&[("big".to_owned(), vec![1; (1 << 20) + 1])]);
    let out = import_bytes(&d, "bigfile", "big.tar", &big);
    assert_refused(
        &out,
        "a large file",
        &[
            "`big` is 1.0 MiB, more than the 1 MiB a file may have (--import-max-file-size)",
            "mayfly daemon --import-max-file-size SIZE",
        ],
    );
    assert_nothing_created(&d, &before, "a large file");
    // Files within the limit that add up to more than the total.
    let five: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("part{i}"), vec![2; 1 << 20]))
        .collect();
    let out = import_bytes(&d, "total", "total.tar", &files_tar(&five));
    assert_refused(
        &out,
        "more than the total",
        &["the archive unpacks to more than 4 MiB (--import-max-bytes)"],
    );
    assert_nothing_created(&d, &before, "more than the total");
    // An archive larger than allowed, whatever it holds (here: padding after its end).
    let mut padded = many_files(3);
    padded.resize(17 << 20, 0);
    let out = d.mayfly_stdin(&["template", "import", "padded", "-"], &padded);
    assert_refused(
        &out,
        "a large upload",
        &["the archive is larger than 16 MiB (--import-max-upload)"],
    );
    assert_nothing_created(&d, &before, "a large upload");
    // Far larger: the daemon reads at most 256 MiB past the refusal, then closes the
    // connection under the client, which must still report the refusal it received.
    let huge = d.dir.join("huge.tar");
    std::fs::write(&huge, many_files(3)).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&huge)
        .and_then(|f| f.set_len(1 << 30))
        .expect("extend");
    let out = d.mayfly(&["template", "import", "huge", huge.to_str().expect("utf-8")]);
    assert_refused(
        &out,
        "a huge upload",
        &["the archive is larger than 16 MiB (--import-max-upload)"],
    );
    assert_nothing_created(&d, &before, "a huge upload");
    d.finish();
}

// ---- free space ---------------------------------------------------------------------------------

/// A sparse plain tar at `path` of `count` files of `each` bytes of zeros: holes on disk, read
/// back as zeros.
fn sparse_tar(path: &Path, count: u64, each: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    let mut offset = 0;
    for i in 0..count {
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(file_header(&format!("zeros-{i}"), each).as_bytes())
            .expect("write");
        offset += 512 + each.div_ceil(512) * 512;
    }
    f.set_len(offset + 1024).expect("set_len");
}

#[test]
fn the_free_space_reserve_is_kept_while_writing() {
    // Leave room for 192 MiB more on the state filesystem, then import 2 GiB in 8 MiB files
    // (each one small enough to pass the check at its header): the check while writing stops
    // it. Others share the filesystem (tests beside this one, other users), so the margins
    // are wide: it would take 1.8 GB freed meanwhile for the import to pass.
    let probe = tempfile::tempdir_in("/tmp").expect("tempdir");
    let st = rustix::fs::statvfs(probe.path()).expect("statvfs");
    let available = st.f_bavail * st.f_frsize;
    let reserve = available.saturating_sub(192 << 20);
    let reserve_arg = reserve.to_string();
    let d = TestDaemon::start_with(&["--import-min-free", &reserve_arg]);
    let before = catalogue(&d);
    let usage_before = disk_usage(&d.state);
    let archive = d.dir.join("sparse.tar");
    sparse_tar(&archive, 256, 8 << 20);
    let out = d.mayfly(&[
        "template",
        "import",
        "full",
        archive.to_str().expect("utf-8"),
    ]);
    assert_refused(
        &out,
        "past the reserve",
        &[
            "free on the state filesystem",
            "still to write",
            "(--import-min-free)",
            "mayfly daemon --import-min-free SIZE|N%",
        ],
    );
    assert_nothing_created(&d, &before, "past the reserve");
    assert!(disk_usage(&d.state) < usage_before + (16 << 20));
    d.finish();
}

// ---- real templates -----------------------------------------------------------------------------

/// Launches `name` from `template`, whose tree has no init, with an idle shell.
fn launch_from(d: &TestDaemon, template: &str, name: &str) {
    d.ok(&[
        "launch",
        template,
        "--name",
        name,
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1000 & wait $!; done",
    ]);
}

#[test]
fn real_templates_pass_with_the_defaults() {
    let d = TestDaemon::start();
    // A busybox root filesystem.
    let out = import_bytes(&d, "bb", "bb.tar.zst", &rootfs_tar_zst(&d, "bb"));
    assert!(out.success(), "{out}");
    launch_from(&d, "bb", "bbi");
    d.ok(&["rm", "--force", "bbi"]);

    // Real Debian content past the ratio check's 64 MiB floor: the host's C headers (text,
    // the most compressible part of a Debian tree: about 12:1 at zstd -19) and package
    // database, beside a busybox root.
    let root = d.dir.join("debianish");
    make_rootfs(&root, "debianish");
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &root).expect("tar the rootfs");
    for dir in ["usr/include", "var/lib/dpkg"] {
        b.append_dir_all(dir, Path::new("/").join(dir))
            .expect("tar a host directory");
    }
    let plain = b.into_inner().expect("finish");
    assert!(plain.len() > 80 << 20, "only {} bytes", plain.len());
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.write_all(&plain).expect("zstd");
    let compressed = enc.finish().expect("zstd");
    let ratio = plain.len() / compressed.len();
    assert!(ratio >= 4, "a ratio of {ratio} tests little");
    let out = import_bytes(&d, "debianish", "debianish.tar.zst", &compressed);
    assert!(out.success(), "{out}");
    launch_from(&d, "debianish", "deb");
    let listed = d.sh("deb", "ls /usr/include/stdio.h /var/lib/dpkg/status");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    d.ok(&["rm", "--force", "deb"]);
    d.finish();
}

// ---- answers to clients that stop reading -------------------------------------------------------

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    common::proc_status_field(pid, "VmRSS")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_client_that_stops_reading_a_build_costs_a_bounded_buffer() {
    let d = TestDaemon::start();
    let pid = d.daemon_pid().expect("the daemon runs");
    let rss_before = rss_kib(pid);
    const LINES: u64 = 400_000;
    let body = json!({
        "run": format!("yes 'a line of build output' | head -n {LINES}; echo x > /flooded"),
    })
    .to_string();
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(CLI_TIMEOUT)).expect("timeout");
    let head = format!(
        "POST /v1/templates/busybox/patch HTTP/1.1\r\nHost: mayfly\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write");
    // Read nothing until the build is over (version 2 exists).
    let done = poll_until(Duration::from_secs(120), || {
        d.json(&["template", "info", "busybox", "--json"])["current_version"] == 2
    });
    assert!(done, "the patch did not finish\n{}", d.logs());
    let rss_after = rss_kib(pid);
    let (status, evs) = finish_request(s);
    assert_eq!(status, 200);
    let lines = evs.iter().filter(|e| e.get("log").is_some()).count() as u64;
    let dropped: Vec<&str> = evs
        .iter()
        .filter_map(|e| e["log"]["line"].as_str())
        .filter(|l| l.contains("lines dropped: the client reads too slowly"))
        .collect();
    assert!(!dropped.is_empty(), "no line says what was dropped");
    assert!(lines < LINES, "all {lines} lines were kept for the client");
    let last = evs.last().expect("events");
    assert!(last.get("done").is_some(), "the result is missing: {last}");
    // Unbounded, 400 000 lines would have taken tens of MiB in the daemon.
    assert!(
        rss_after < rss_before + 24 * 1024,
        "the daemon grew from {rss_before} to {rss_after} KiB"
    );
    d.finish();
}
