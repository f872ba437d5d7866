//! Imports refused for their source or name rather than their content: missing or odd
//! sources, invalid and existing names, bad `--cmd`, refusals that must reach a client still
//! uploading a large archive, and trees whose /proc, /sys or /dev cannot be used.

mod common;

use serde_json::{Value, json};

use common::imports::{
    IDLE, Sentinels, big_rootfs_tar, events, header_offsets, import_bytes, layer_digests, tar_with,
};
use common::{
    RawEntry, TestDaemon, assert_nothing_created, assert_refused, catalogue, mounts_mentioning,
    raw_tar, tar_of, template_info,
};

// ---- tests: bad input -----------------------------------------------------------------------

#[test]
fn bad_sources_names_and_existing_templates_are_refused() {
    let d = TestDaemon::start();
    let good = d.dir.join("good");
    common::make_rootfs(&good, "good");
    let good_s = good.to_str().expect("utf-8");
    let before = catalogue(&d);

    // A source that does not exist, or is neither a file nor a directory.
    let missing = d.dir.join("no-such-rootfs.tar");
    let missing_s = missing.to_str().expect("utf-8");
    let out = d.mayfly(&["template", "import", "missing", missing_s]);
    assert_refused(&out, "missing source", &[missing_s]);
    let out = d.mayfly(&["template", "import", "missing", "/no/such/dir/"]);
    assert_refused(&out, "missing directory", &["/no/such/dir"]);
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "missing", "path": missing_s})
            .to_string()
            .as_bytes(),
    );
    // The status is the outcome.
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("importing a missing path: {evs:?}"));
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains(missing_s)),
        "{err}"
    );
    let r = d.api_raw(
        "POST",
        "/v1/templates",
        "application/json",
        json!({"name": "sock", "path": d.socket.to_str().expect("utf-8")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let evs = events(&r.body);
    let err = evs
        .iter()
        .find_map(|e| e.get("error"))
        .unwrap_or_else(|| panic!("importing a socket: {evs:?}"));
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("neither a directory nor a file")),
        "{err}"
    );
    assert_nothing_created(&d, &before, "missing sources");

    // Invalid names: a directory through the CLI, an archive by path through the API (an
    // archive uploaded under a bad name: `early_refusals_of_a_large_upload_reach_the_client`).
    let tar_path = d.dir.join("small.tar");
    std::fs::write(&tar_path, tar_of(&good)).expect("write");
    let tar_s = tar_path.to_str().expect("utf-8");
    let api_import = |name: &str, path: &str| -> Value {
        let r = d.api_raw(
            "POST",
            "/v1/templates",
            "application/json",
            json!({"name": name, "path": path}).to_string().as_bytes(),
        );
        assert!(
            r.status >= 400,
            "importing {path} as {name:?}: status {}",
            r.status
        );
        let evs = events(&r.body);
        evs.iter()
            .find_map(|e| e.get("error"))
            .cloned()
            .unwrap_or_else(|| panic!("importing {path} as {name:?}: no error: {evs:?}"))
    };
    let long = "a".repeat(65);
    for name in [
        "Upper",
        "-dash",
        "a/b",
        "../up",
        "has space",
        "x@1",
        long.as_str(),
        "é",
        "",
    ] {
        let out = d.mayfly(&["template", "import", "--", name, good_s]);
        assert_refused(&out, &format!("name {name:?}"), &["invalid template name"]);
        let err = api_import(name, tar_s);
        assert_eq!(err["code"], "invalid_argument", "{err}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid template name")),
            "{err}"
        );
    }
    assert_nothing_created(&d, &before, "invalid names");

    // An existing name: refused (the README and --help: a new version comes from `template
    // patch` or `publish`, not from a second import), the existing template unchanged.
    d.ok(&["template", "import", "taken", good_s]);
    let layers = layer_digests(&d, "taken");
    let after_first = catalogue(&d);
    let other = d.dir.join("other");
    common::make_rootfs(&other, "other");
    let out = d.mayfly(&[
        "template",
        "import",
        "taken",
        other.to_str().expect("utf-8"),
    ]);
    assert_refused(&out, "existing name", &["taken", "already exists"]);
    let err = api_import("taken", tar_s);
    assert_eq!(err["code"], "already_exists", "{err}");
    let out = d.mayfly(&["template", "import", "busybox", good_s]);
    assert_refused(&out, "the built-in name", &["busybox", "already exists"]);
    assert_nothing_created(&d, &after_first, "existing names");
    let info = template_info(&d, "taken");
    assert_eq!(info["current_version"], 1, "{info}");
    assert_eq!(info["versions"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(layer_digests(&d, "taken"), layers);
    assert_eq!(
        d.ok(&["run", "--rm", "taken", "--", "cat", "/marker"]),
        "good\n"
    );

    // Bad --cmd.
    let out = d.mayfly(&[
        "template",
        "import",
        "badcmd",
        good_s,
        "--cmd",
        "[\"unterminated",
    ]);
    assert_refused(&out, "bad --cmd JSON", &["--cmd"]);
    let out = d.mayfly(&["template", "import", "badcmd", good_s, "--cmd", "[]"]);
    assert_refused(&out, "empty --cmd", &["command"]);
    assert_nothing_created(&d, &after_first, "bad --cmd");
    d.finish();
}

/// The daemon refuses a bad name, an existing name, a hostile first entry or a bad first
/// header before it has read the whole upload (of megabytes, or even of a few KiB); the client, still sending a large archive,
/// must get that answer (exit code 1, the daemon's message), not a broken connection. Whether
/// the answer is lost depends on timing, so each case is tried a few times.
#[test]
fn early_refusals_of_a_large_upload_reach_the_client() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let tar = big_rootfs_tar(&d, "early", 16);
    let big_dir = d.dir.join("big-early");
    d.ok(&[
        "template",
        "import",
        "taken",
        big_dir.to_str().expect("utf-8"),
    ]);
    let before = catalogue(&d);
    let evil_first = tar_with(
        &raw_tar(&[RawEntry::file("../../../../sentinel/first", b"pwned")]),
        &tar,
    );
    assert_eq!(header_offsets(&tar)[0], 0);
    let mut bad_first_header = tar.clone();
    bad_first_header[0] ^= 0x20;
    let small = raw_tar(&[RawEntry::dir("proc"), RawEntry::file("marker", b"small\n")]);
    let cases: [(&str, &str, &[u8], &[&str]); 5] = [
        (
            "invalid name",
            "Upper",
            &tar,
            &["invalid template name", "Upper"],
        ),
        ("existing name", "taken", &tar, &["taken", "already exists"]),
        (
            "a hostile first entry",
            "early",
            &evil_first,
            &["../../../../sentinel/first", "climbs out"],
        ),
        (
            "a bad first header",
            "early",
            &bad_first_header,
            &["archive"],
        ),
        (
            "a small archive under an invalid name",
            "has space",
            &small,
            &["invalid template name"],
        ),
    ];
    for (case, name, bytes, mentions) in cases {
        for attempt in 1..=3 {
            let out = import_bytes(&d, name, "early.tar", bytes);
            assert_refused(&out, &format!("{case} (file, try {attempt})"), mentions);
            let out = d.mayfly_stdin(&["template", "import", name, "-"], bytes);
            assert_refused(&out, &format!("{case} (stdin, try {attempt})"), mentions);
        }
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }
    assert_eq!(layer_digests(&d, "taken").len(), 1);
    d.finish();
}

#[test]
fn trees_without_usable_proc_sys_dev_do_not_start_and_touch_nothing_outside() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let far = s.far.to_str().expect("utf-8").to_owned();

    // An empty directory.
    let empty = d.dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let before = catalogue(&d);
    let out = d.mayfly(&[
        "template",
        "import",
        "empty",
        empty.to_str().expect("utf-8"),
    ]);
    if out.success() {
        // Accepted as an (empty) template: an instance of it must fail to start, clearly,
        // and leave nothing.
        let out = d.mayfly(&["launch", "empty", "--name", "e1", "--", "/bin/sh"]);
        assert_eq!(
            out.code, 1,
            "an instance of an empty template started: {out}"
        );
        assert!(out.stderr.contains("/bin/sh"), "{out}");
        assert!(
            d.instance_names().is_empty(),
            "a failed launch left an instance"
        );
        d.ok(&["template", "rm", "empty"]);
    } else {
        assert_refused(&out, "empty directory", &[]);
        assert_nothing_created(&d, &before, "empty directory");
    }

    // /proc, /sys or /dev a symlink to a host directory (they would resolve on the host
    // before the pivot), or a file.
    for (top, how) in [
        ("proc", "symlink"),
        ("sys", "symlink"),
        ("dev", "symlink"),
        ("proc", "file"),
    ] {
        let root = d.dir.join(format!("bad-{top}-{how}"));
        common::make_rootfs(&root, "bad");
        std::fs::remove_dir(root.join(top)).expect("rmdir");
        if how == "symlink" {
            std::os::unix::fs::symlink(&far, root.join(top)).expect("symlink");
        } else {
            std::fs::write(root.join(top), "not a dir").expect("write");
        }
        let name = format!("bad-{top}-{how}");
        let case = format!("/{top} a {how}");
        let before = catalogue(&d);
        let out = d.mayfly(&["template", "import", &name, root.to_str().expect("utf-8")]);
        if out.success() {
            let out = d.mayfly(&[
                "launch", &name, "--name", "badi", "--", "/bin/sh", "-c", IDLE,
            ]);
            assert_eq!(out.code, 1, "{case}: an instance started: {out}");
            assert!(
                out.stderr.contains(&format!("/{top}")) && out.stderr.contains("not a directory"),
                "{case}: the error does not say what is wrong: {out}"
            );
            d.ok(&["template", "rm", &name]);
        } else {
            assert_refused(&out, &case, &[top]);
        }
        s.assert_untouched(&case);
        assert!(
            d.instance_names().is_empty(),
            "{case}: {:?}",
            d.instance_names()
        );
        assert!(
            mounts_mentioning(&far).is_empty(),
            "{case}: something was mounted on {far}: {:?}",
            mounts_mentioning(&far)
        );
        assert_nothing_created(&d, &before, &case);
    }
    d.finish();
}

/// `tar` with the header at `offset` changed by `f` and its checksum made right again, so
/// that the reader gets past the checksum to what `f` broke.
fn patch_header(tar: &mut [u8], offset: usize, f: impl FnOnce(&mut [u8])) {
    let h = &mut tar[offset..offset + 512];
    f(h);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Whether `text` holds a control character other than newline and tab.
fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

#[test]
fn binary_garbage_from_an_archive_never_reaches_the_terminal() {
    let d = TestDaemon::start();
    let before = catalogue(&d);
    // A refused entry whose name sets the terminal's title, clears the screen and carries
    // bytes that are not UTF-8.
    let mut hostile = raw_tar(&[RawEntry::file(
        "../AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        b"x",
    )]);
    patch_header(&mut hostile, 0, |h| {
        let name = b"../\x1b]0;owned\x07\x1b[2J\xff\xfe/evil";
        h[..100].fill(0);
        h[..name.len()].copy_from_slice(name);
    });
    // A header whose size field is garbage, under a name full of escapes: the tar reader's
    // complaint quotes both.
    let mut garbage = raw_tar(&[
        RawEntry::file("ok", b"fine\n"),
        RawEntry::file("BBBBBBBBBBBB", b"y"),
    ]);
    let second = header_offsets(&garbage)[1];
    patch_header(&mut garbage, second, |h| {
        let name = b"\x1b[31mred\x1b[0m";
        h[..100].fill(0);
        h[..name.len()].copy_from_slice(name);
        h[124..136].copy_from_slice(b"\x1b[5m\x07\x01\x02\x03\x04\x05\x06\0");
    });
    for (case, archive, mentions) in [
        (
            "a hostile name",
            &hostile,
            &["\\x1b]0;owned\\x07\\x1b[2J\\xff\\xfe", "climbs out"][..],
        ),
        (
            "a garbage header",
            &garbage,
            &["\\x1b[31mred", "archive"][..],
        ),
    ] {
        // The CLI, uploading.
        let out = import_bytes(&d, "garbage", "garbage.tar", archive);
        assert_refused(&out, case, mentions);
        assert!(
            !has_control(&out.stderr) && !has_control(&out.stdout),
            "{case}: control characters reach the terminal: {:?}",
            out.stderr
        );
        // The API: the status says so, and the message is printable.
        let r = d.api_raw(
            "POST",
            "/v1/templates?name=garbage",
            "application/x-tar",
            archive,
        );
        assert_eq!(
            r.status,
            400,
            "{case}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let error = &r.json()["error"];
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!has_control(message), "{case}: {message:?}");
        for m in mentions {
            assert!(message.contains(m), "{case}: {message:?} lacks {m:?}");
        }
        assert_eq!(error["code"], "invalid_argument", "{case}: {error}");
    }
    assert_nothing_created(&d, &before, "garbage");
    d.finish();
}
