//! `mayfly template import` of good input: root filesystems from a directory, a `.tar`,
//! `.tar.gz`, `.tar.zst` or stdin, through the CLI and the API; what an instance launched from
//! the result sees (content, modes, owners, links, xattrs); layers shared by digest; the
//! progress display (only on a terminal, only on stderr).

mod common;
mod view;

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::imports::{
    IDLE, big_rootfs_tar, events, import_bytes, launch, layer_digests, rootfs_tar,
};
use common::{
    CLI_TIMEOUT, RawEntry, TestDaemon, assert_nothing_created, catalogue, gzip, http_with,
    layer_dir_name, layer_dirs, raw_tar, template_info, template_names, zstd,
};

// ---- helpers: trees -------------------------------------------------------------------------

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A `security.capability` value (v2) granting CAP_NET_BIND_SERVICE, permitted and effective.
fn net_bind_capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // revision 2, effective
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// A root filesystem with every kind of entry: odd modes (setuid, setgid, sticky, 0600),
/// owners other than root (on a symlink too), relative, absolute and dangling symlinks, hard
/// links across directories, a FIFO, an empty and a binary file, nanosecond mtimes, `user.*`
/// xattrs on a file and a directory, a file capability, and a `trusted.overlay.opaque` that
/// must not survive.
fn make_rich_tree(root: &Path, marker: &str) {
    common::make_rootfs(root, marker);
    for applet in ["stat", "readlink", "ls", "cat"] {
        let link = root.join("bin").join(applet);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).expect("symlink");
        }
    }
    let data = root.join("data");
    for dir in ["data/sub", "data/sticky", "other"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(data.join("plain"), "hello\n").expect("write");
    std::fs::write(data.join("secret"), "s3cret\n").expect("write");
    std::fs::write(data.join("empty"), "").expect("write");
    std::fs::write(data.join("binary"), b"\x00\x01\x02\xff\xfe bin").expect("write");
    std::fs::write(data.join("suid"), "#!/bin/sh\nid\n").expect("write");
    std::fs::write(data.join("sgid"), "#!/bin/sh\nid\n").expect("write");
    std::fs::write(data.join("capbin"), "caps\n").expect("write");
    std::fs::write(data.join("linked"), "shared inode\n").expect("write");
    std::fs::hard_link(data.join("linked"), data.join("linked2")).expect("link");
    std::fs::hard_link(data.join("linked"), root.join("other/linked3")).expect("link");
    std::os::unix::fs::symlink("../marker", data.join("rel")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", data.join("abs")).expect("symlink");
    std::os::unix::fs::symlink("/no/such/target", data.join("dangling")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        data.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    // Owners first: chown clears the setuid and setgid bits.
    lchown(&data.join("secret"), 1234, 5678);
    lchown(&data.join("sgid"), 0, 42);
    lchown(&data.join("rel"), 4321, 8765);
    lchown(&root.join("other"), 65534, 65534);
    chmod(&data.join("secret"), 0o600);
    chmod(&data.join("suid"), 0o4755);
    chmod(&data.join("sgid"), 0o2711);
    chmod(&data.join("sticky"), 0o1777);
    chmod(&data.join("fifo"), 0o640);
    set_xattr(&data.join("plain"), "user.color", b"blue");
    set_xattr(&data.join("sub"), "user.dir", b"\x00\x01");
    set_xattr(
        &data.join("capbin"),
        "security.capability",
        &net_bind_capability(),
    );
    set_xattr(&data.join("sticky"), "trusted.overlay.opaque", b"y");
    set_mtime(&data.join("plain"), 981_173_106, 123_456_789);
    set_mtime(&data.join("rel"), 1_000_000_000, 5);
    set_mtime(&data.join("secret"), 1_234_567_890, 0);
    // Directory mtimes last: creating children changes them.
    set_mtime(&data.join("sub"), 1_100_000_000, 999_999_999);
    set_mtime(&data, 1_200_000_000, 42);
}

/// A tarball of `root` made by GNU tar (PAX format: hard links, numeric owners, nanosecond
/// mtimes, xattrs, the trusted.overlay one included so that the importer has to drop it).
fn gnu_tar_of(root: &Path) -> Vec<u8> {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--format=posix",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=user.*",
        "--xattrs-include=security.capability",
        "--xattrs-include=trusted.*",
        "-C",
    ])
    .arg(root)
    .args(["-cf", "-", "."]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run tar");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---- tests: the happy paths -----------------------------------------------------------------

#[test]
fn import_from_dir_tar_gz_zst_and_stdin_shows_the_exact_tree_and_shares_layers() {
    let d = TestDaemon::start();
    let src = d.dir.join("src");
    make_rich_tree(&src, "rich");
    let expected = view::of_dir(&src, 0, &HashSet::new());
    assert!(
        expected.contains_key("data/linked2")
            && expected.contains_key("data/fifo")
            && expected["data/plain"].xattrs.contains_key("user.color")
            && expected["data/plain"].mtime == (981_173_106, 123_456_789),
        "the source tree was made"
    );
    let src_s = src.to_str().expect("utf-8").to_owned();
    let before = layer_dirs(&d);

    // A directory.
    let out = d.mayfly(&["template", "import", "t-dir", &src_s]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .starts_with("imported template t-dir version 1 (1 layer"),
        "{out}"
    );
    let dir_layers = layer_digests(&d, "t-dir");
    assert_eq!(dir_layers.len(), 1, "{dir_layers:?}");
    let after_dir = layer_dirs(&d);
    let new: Vec<&String> = after_dir.difference(&before).collect();
    assert_eq!(
        new,
        vec![&layer_dir_name(&dir_layers[0])],
        "one new layer directory, named by the digest"
    );

    // The same tree as .tar, .tar.gz, .tar.zst and on stdin: one layer for all four.
    let tar = gnu_tar_of(&src);
    for record in [
        &b"SCHILY.xattr.user.color=blue"[..],
        b"SCHILY.xattr.trusted.overlay.opaque=y",
        b"SCHILY.xattr.security.capability=",
    ] {
        assert!(
            tar.windows(record.len()).any(|w| w == record),
            "GNU tar did not store {}",
            String::from_utf8_lossy(record)
        );
    }
    for (name, file, bytes) in [
        ("t-tar", "rootfs.tar", tar.clone()),
        ("t-gz", "rootfs.tar.gz", gzip(&tar)),
        ("t-zst", "rootfs.tar.zst", zstd(&tar)),
    ] {
        let out = import_bytes(&d, name, file, &bytes);
        assert_eq!(out.code, 0, "{name}: {out}");
        assert!(
            out.stdout
                .starts_with(&format!("imported template {name} version 1 (1 layer")),
            "{name}: {out}"
        );
    }
    let out = d.mayfly_stdin(&["template", "import", "t-stdin", "-"], &zstd(&tar));
    assert_eq!(out.code, 0, "stdin: {out}");
    let tar_layers = layer_digests(&d, "t-tar");
    for name in ["t-gz", "t-zst", "t-stdin"] {
        assert_eq!(
            layer_digests(&d, name),
            tar_layers,
            "{name} has the layer of the same tree as a plain tar"
        );
    }
    // GNU tar keeps everything the directory import copies (nanosecond mtimes, owners,
    // xattrs, hard links, the root's own metadata), so it is the same tree: the same layer.
    assert_eq!(
        tar_layers, dir_layers,
        "the tarball of a tree and the tree itself"
    );
    let after_tars = layer_dirs(&d);
    assert_eq!(
        after_tars, after_dir,
        "no new layer directory for the tarballs"
    );
    // The same directory again: no new layer, the same digest.
    d.ok(&["template", "import", "t-dir2", &src_s]);
    assert_eq!(layer_digests(&d, "t-dir2"), dir_layers);
    assert_eq!(
        layer_dirs(&d),
        after_tars,
        "a second import of a tree shares its layer"
    );

    // `template list`, text and JSON.
    let text = d.ok(&["template", "list"]);
    let header_line = text.lines().next().unwrap_or_default();
    assert!(
        header_line.starts_with("NAME") && header_line.contains("VERSION"),
        "{text}"
    );
    for name in ["t-dir", "t-tar", "t-gz", "t-zst", "t-stdin", "t-dir2"] {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in the list:\n{text}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["1", "1"], "version 1, one layer: {row}");
    }
    let list = d.json(&["template", "list", "--json"]);
    let tdir = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "t-dir")
        .unwrap_or_else(|| panic!("t-dir not in {list}"));
    assert_eq!(tdir["current_version"], 1, "{tdir}");
    assert_eq!(tdir["builtin"], false, "{tdir}");

    // `template info --json`: the layer's digest, size and entries, the message.
    let info = template_info(&d, "t-tar");
    assert_eq!(info["name"], "t-tar", "{info}");
    let v1 = &info["versions"][0];
    assert_eq!(v1["version"], 1, "{info}");
    let layer = &v1["layers"][0];
    assert!(
        layer["digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("blake3:")),
        "{info}"
    );
    let busybox_size = std::fs::metadata("/bin/busybox").expect("busybox").len();
    assert!(
        layer["size"].as_u64().is_some_and(|s| s > busybox_size),
        "the size counts file content: {info}"
    );
    assert!(
        layer["entries"]
            .as_u64()
            .is_some_and(|n| n >= u64::try_from(expected.len()).expect("len") - 1),
        "{info}"
    );
    assert!(
        v1["config"]["command"]
            .as_array()
            .is_some_and(|c| c.is_empty()),
        "no /sbin/init, no --cmd: no default command: {info}"
    );

    // What instances see: exactly the source tree (minus what mayfly mounts), for the
    // directory and for the tarball.
    for (template, inst) in [
        ("t-dir", "from-dir"),
        ("t-tar", "from-tar"),
        ("t-zst", "from-zst"),
    ] {
        launch(&d, template, inst);
        let mut seen = view::of_instance(&d, inst);
        let mut want = expected.clone();
        // The root of an instance is its writable layer's directory (and no part of its view).
        want.remove(".");
        // mayfly gives every instance /run/mayfly (its metadata): a tree without /run shows
        // one, holding only that mount point, as root's 0755 directory.
        if !want.contains_key("run") {
            let run = seen.remove("run").expect("/run holds /run/mayfly");
            assert_eq!((run.kind, run.mode, run.uid), ("dir", 0o755, 0));
        }
        view::assert_same(&format!("{template} seen by {inst}"), &want, &seen);
    }
    // From inside too: owners, modes, link targets, hard-link counts, the FIFO.
    let inside = d.sh(
        "from-tar",
        "stat -c '%n %u:%g %a %h' /data/secret /data/suid /data/sgid /data/sticky /data/linked /other/linked3; \
         readlink /data/abs; readlink /data/rel; cat /data/rel; test -p /data/fifo && echo fifo",
    );
    assert_eq!(
        inside,
        "/data/secret 1234:5678 600 1\n/data/suid 0:0 4755 1\n/data/sgid 0:42 2711 1\n\
         /data/sticky 0:0 1777 2\n/data/linked 0:0 644 3\n/other/linked3 0:0 644 3\n\
         /etc/passwd\n../marker\nrich\nfifo\n",
        "what the instance sees from inside"
    );

    // On the host, the layers hold the file capability but no trusted.overlay.* xattr taken
    // from the input (it would change what overlayfs makes of the layer).
    for digest in [&dir_layers[0], &tar_layers[0]] {
        let layer = d.state.join("layers").join(layer_dir_name(digest));
        assert_eq!(
            view::xattr_value(&layer.join("data/capbin"), "security.capability"),
            Some(net_bind_capability()),
            "{digest}: the file capability is kept"
        );
        assert!(
            !view::xattr_names(&layer.join("data/sticky"))
                .iter()
                .any(|x| x.starts_with("trusted.")),
            "{digest}: trusted.overlay.opaque was imported: {:?}",
            view::xattr_names(&layer.join("data/sticky"))
        );
    }

    for inst in ["from-dir", "from-tar", "from-zst"] {
        d.ok(&["rm", "--force", inst]);
    }
    d.finish();
}

#[test]
fn import_over_the_api_from_an_upload_and_from_a_path() {
    let d = TestDaemon::start();
    let tar = rootfs_tar(&d, "api", "via-api");

    // An upload: the body is the archive, `?name=` names the template; the answer comes when
    // the import has ended: 201 and the template.
    let r = d.api_raw(
        "POST",
        "/v1/templates?name=api-up&message=uploaded%20by%20a%20test",
        "application/x-tar",
        &gzip(&tar),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/v1/templates/api-up"));
    let up = r.json();
    assert_eq!(up["name"], "api-up", "{up}");
    assert_eq!(up["versions"][0]["message"], "uploaded by a test", "{up}");

    // A path on the daemon's host, with a default command, following the progress:
    // newline-delimited events end with `done`.
    let path = d.dir.join("api.tar");
    std::fs::write(&path, &tar).expect("write");
    let body = json!({
        "name": "api-path",
        "path": path.to_str().expect("utf-8"),
        "command": ["/bin/sh", "-c", IDLE],
    });
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates",
        "application/json",
        &[("Accept", "application/x-ndjson")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let evs = events(&r.body);
    assert!(
        evs[..evs.len() - 1]
            .iter()
            .all(|e| e.get("progress").is_some()),
        "only progress before the result: {evs:?}"
    );
    let done = &evs.last().expect("an event")["done"];
    assert_eq!(done["name"], "api-path", "{evs:?}");
    assert_eq!(
        done["versions"][0]["config"]["command"],
        json!(["/bin/sh", "-c", IDLE]),
        "{evs:?}"
    );
    // The same tree: the same layer.
    assert_eq!(layer_digests(&d, "api-up"), layer_digests(&d, "api-path"));

    // GET shows both; the default command is the init.
    let (status, list) = d.api("GET", "/v1/templates", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"api-up") && names.contains(&"api-path"),
        "{list}"
    );
    d.ok(&["launch", "api-path", "--name", "apiinst"]);
    assert_eq!(d.sh("apiinst", "cat /marker"), "via-api\n");

    // Refusals over the API, with their status whether or not the progress is followed: a
    // relative path, an unknown field, a hostile upload.
    for accept in ["application/json", "application/x-ndjson"] {
        let r = http_with(
            &d.socket,
            "POST",
            "/v1/templates",
            "application/json",
            &[("Accept", accept)],
            json!({"name": "rel", "path": "relative/dir"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            r.status,
            400,
            "{accept}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("absolute")),
            "{accept}: {}",
            r.json()
        );
    }
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "rel", "path": "relative/dir"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400);
    let err = &r.json()["error"];
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("absolute")),
        "{err}"
    );
    let (status, v) = d.api(
        "POST",
        "/v1/templates",
        Some(&json!({"name": "x", "path": "/tmp", "bogus": 1})),
    );
    assert_eq!(status, 400, "unknown fields are refused: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bogus")),
        "the error names the unknown field: {v}"
    );

    let before = catalogue(&d);
    let evil = raw_tar(&[RawEntry::file("../../../../sentinel/api-evil", b"x")]);
    let r = d.api_raw(
        "POST",
        "/v1/templates?name=api-evil",
        "application/x-tar",
        &evil,
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let err = &r.json()["error"];
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("../../../../sentinel/api-evil")),
        "the error names the entry: {err}"
    );
    assert!(
        !d.dir.join("sentinel").exists(),
        "nothing was written outside"
    );
    assert_nothing_created(&d, &before, "hostile upload over the API");
    let (status, _) = d.api("GET", "/v1/templates/api-evil", None);
    assert_eq!(status, 404, "no half-created template");

    // DELETE: refused (409, in_use, naming the instance) while an instance uses it.
    let (status, v) = d.api("DELETE", "/v1/templates/api-path", None);
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "in_use", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("apiinst")),
        "{v}"
    );
    d.ok(&["rm", "--force", "apiinst"]);
    for name in ["api-up", "api-path"] {
        let (status, v) = d.api("DELETE", &format!("/v1/templates/{name}"), None);
        assert_eq!(status, 204, "{v}");
    }
    assert_eq!(template_names(&d), ["busybox"]);
    d.finish();
}

// ---- tests: progress ------------------------------------------------------------------------
#[test]
fn import_without_a_terminal_prints_only_the_result() {
    let d = TestDaemon::start();
    let tar = big_rootfs_tar(&d, "quiet", 4);
    let path = d.dir.join("quiet.tar");
    std::fs::write(&path, &tar).expect("write");
    let dir = d.dir.join("big-quiet");
    for (name, source) in [
        ("quiet-file", path.to_str().expect("utf-8")),
        ("quiet-dir", dir.to_str().expect("utf-8")),
    ] {
        let out = d.mayfly(&["template", "import", name, source]);
        assert_eq!(out.code, 0, "{out}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with(&format!(
                "imported template {name} version 1 (1 layer, top blake3:"
            )),
            "{out}"
        );
        assert!(lines[1].starts_with("note: it has no /sbin/init"), "{out}");
        for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !text.contains('\r') && !text.contains('\x1b'),
                "{name}: terminal control codes on {stream}: {out:?}"
            );
        }
        assert_eq!(out.stderr, "", "{name}: nothing on stderr: {out}");
    }
    let out = d.mayfly_stdin(&["template", "import", "quiet-stdin", "-"], &tar);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        !out.stdout.contains('\r') && !out.stdout.contains('\x1b'),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    // --json prints one JSON document and nothing else.
    let out = d.mayfly(&[
        "template",
        "import",
        "quiet-json",
        path.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["name"], "quiet-json");
    d.finish();
}

/// Runs `cmd` with its stderr on a new pseudo-terminal (stdout a pipe, stdin /dev/null);
/// returns the exit code, stdout, and everything written to the terminal.
fn run_with_stderr_on_pty(mut cmd: Command) -> (i32, String, Vec<u8>) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("open a pty");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("set the window size");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave: OwnedFd = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .expect("open the pty's terminal");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn");
    // Our copy of the terminal goes with the command, so that the master sees EOF (EIO) when
    // the child is done.
    drop(cmd);
    let mut stdout = child.stdout.take().expect("stdout");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let term_thread = std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().expect("stdout reader");
    let term = term_thread.join().expect("terminal reader");
    (status.code().unwrap_or(-1), stdout, term)
}

#[test]
fn import_on_a_terminal_shows_progress_on_stderr_only() {
    let d = TestDaemon::start();
    let tar = big_rootfs_tar(&d, "loud", 8);
    let path = d.dir.join("loud.tar");
    std::fs::write(&path, &tar).expect("write");
    let (code, stdout, term) = run_with_stderr_on_pty(d.command(&[
        "template",
        "import",
        "loud",
        path.to_str().expect("utf-8"),
    ]));
    let term = String::from_utf8_lossy(&term).into_owned();
    assert_eq!(code, 0, "stdout: {stdout}\nterminal: {term:?}");
    assert!(
        term.contains("uploading") && term.contains("loud.tar"),
        "no progress display on the terminal: {term:?}"
    );
    assert!(
        stdout.starts_with("imported template loud version 1 (1 layer"),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r') && !stdout.contains("uploading"),
        "the progress display leaked onto stdout: {stdout:?}"
    );
    assert_eq!(layer_digests(&d, "loud").len(), 1);

    // A directory: a spinner naming it while it is copied.
    let dir = d.dir.join("big-loud");
    let (code, stdout, term) = run_with_stderr_on_pty(d.command(&[
        "template",
        "import",
        "loud-dir",
        dir.to_str().expect("utf-8"),
    ]));
    let term = String::from_utf8_lossy(&term).into_owned();
    assert_eq!(code, 0, "stdout: {stdout}\nterminal: {term:?}");
    assert!(
        term.contains("copying") && term.contains("big-loud"),
        "no progress display on the terminal: {term:?}"
    );
    assert!(
        stdout.starts_with("imported template loud-dir version 1 (1 layer")
            && !stdout.contains('\x1b')
            && !stdout.contains("copying"),
        "{stdout:?}"
    );
    d.finish();
}
