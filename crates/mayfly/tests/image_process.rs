//! What an image says about its process, from images made by the real `umoci`: its `User`
//! (a uid:gid or a name, resolved in the image's own /etc/passwd and /etc/group, with
//! supplementary groups, HOME and no capabilities for a user that is not root), its
//! `Entrypoint` and `Cmd` kept apart (arguments replace `Cmd` and follow `Entrypoint`,
//! `--entrypoint` replaces it), `--user` for `run`, `launch` and `exec`, and what
//! `template info` and `info` say of them.

mod common;

use std::path::Path;

use serde_json::{Value, json};

use common::tools::image_config;
use common::umoci::{build_image, busybox_rootfs};
use common::{TestDaemon, strings, template_info};

/// Prints who the process is, one fact a line: uid, gid, all groups, HOME, and the
/// effective, permitted, inheritable and ambient capability sets.
const WHO: &str = "id -u; id -g; id -G; echo $HOME; \
    grep -E '^Cap(Eff|Prm|Inh|Amb)' /proc/self/status | sed 's/\\t/ /'";

/// The capability sets of a process that has none.
const NO_CAPS: &str = "CapInh: 0000000000000000\nCapPrm: 0000000000000000\n\
    CapEff: 0000000000000000\nCapAmb: 0000000000000000\n";

/// An init that idles and ends at once on TERM or INT.
const IDLE: &str = "trap 'exit 0' TERM INT; while :; do sleep 1000 & wait $!; done";

/// Builds an image with `umoci` from the busybox root filesystem and `config`, imports it as
/// template `name`, and returns the template's defaults (`config` of its only version).
fn import_image(d: &TestDaemon, name: &str, config: &[&str]) -> Value {
    let layout = d.dir.join(format!("{name}-oci"));
    build_image(&layout, "latest", busybox_rootfs, config);
    d.ok(&["template", "import", name, path(&layout)]);
    template_info(d, name)["versions"][0]["config"].clone()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn an_image_user_by_ids_runs_the_default_command_without_capabilities() {
    let d = TestDaemon::start();
    let layout = d.dir.join("ids-oci");
    build_image(
        &layout,
        "latest",
        busybox_rootfs,
        &[
            "--config.user",
            "65534:65534",
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            WHO,
        ],
    );
    // The fixture is what the test thinks it is.
    let image = image_config(&layout, "latest");
    assert_eq!(image["User"], "65534:65534", "{image}");
    assert_eq!(image["Entrypoint"], json!(["/bin/sh", "-c"]), "{image}");
    assert_eq!(image["Cmd"], json!([WHO]), "{image}");
    d.ok(&["template", "import", "ids", path(&layout)]);

    // The default command runs as 65534:65534; an explicit group means no supplementary
    // ones but itself; HOME from the passwd entry of uid 65534; no capabilities.
    let out = d.ok(&["run", "--rm", "ids"]);
    assert_eq!(
        out,
        format!("65534\n65534\n65534\n/home/nobody\n{NO_CAPS}"),
        "the image's User is honoured"
    );
    // Arguments replace Cmd and follow the Entrypoint (`sh -c ARG`), still as the user.
    assert_eq!(
        d.ok(&["run", "--rm", "ids", "--", "id -u; echo $0"]),
        "65534\n/bin/sh\n"
    );
    // --user 0 overrides the image's user for that run: root, with root's capabilities.
    let out = d.ok(&["run", "--rm", "--user", "0", "ids"]);
    let out = lines(&out);
    assert_eq!(out[..4], ["0", "0", "0", "/root"], "{out:?}");
    assert!(
        out.contains(&"CapInh: 0000000000000000") && out.contains(&"CapAmb: 0000000000000000"),
        "{out:?}"
    );
    let eff = out
        .iter()
        .find_map(|l| l.strip_prefix("CapEff: "))
        .expect("CapEff");
    assert_ne!(eff, "0000000000000000", "root keeps its capabilities");
    // The next run without --user is the image's user again.
    assert_eq!(d.ok(&["run", "--rm", "ids", "--", "id -u"]), "65534\n");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.finish();
}

#[test]
fn entrypoint_and_cmd_stay_apart_and_the_defaults_are_shown() {
    let d = TestDaemon::start();
    let config = import_image(
        &d,
        "echoer",
        &[
            "--config.entrypoint",
            "/bin/echo",
            "--config.entrypoint",
            "from-entrypoint",
            "--config.cmd",
            "from-cmd",
            "--config.user",
            "app",
        ],
    );
    assert_eq!(
        config["entrypoint"],
        json!(["/bin/echo", "from-entrypoint"]),
        "{config}"
    );
    assert_eq!(config["cmd"], json!(["from-cmd"]), "{config}");
    assert_eq!(
        config["command"],
        json!(["/bin/echo", "from-entrypoint", "from-cmd"]),
        "{config}"
    );
    assert_eq!(config["user"], "app", "{config}");
    assert_eq!(config["stop_signal"], "SIGTERM", "{config}");
    let text = d.ok(&["template", "info", "echoer"]);
    for line in [
        "command:    /bin/echo from-entrypoint from-cmd",
        "entrypoint: /bin/echo from-entrypoint",
        "cmd:        from-cmd",
        "user:       app",
        "workdir:    /",
        "stop:       SIGTERM",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }

    // Defaults; arguments replace Cmd and are appended to the Entrypoint.
    assert_eq!(
        d.ok(&["run", "--rm", "echoer"]),
        "from-entrypoint from-cmd\n"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "echoer", "--", "a", "b"]),
        "from-entrypoint a b\n"
    );
    // --entrypoint replaces it, and Cmd is dropped (Docker's rule) unless arguments follow.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/id",
            "echoer",
            "--",
            "-u"
        ]),
        "1000\n"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "--entrypoint", "/bin/echo", "echoer"]),
        "\n",
        "the image's Cmd is dropped with its Entrypoint"
    );
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            r#"["/bin/sh","-c"]"#,
            "echoer",
            "--",
            "echo $HOME"
        ]),
        "/srv/app\n"
    );
    // --entrypoint '' clears it: the arguments are the whole command.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "",
            "echoer",
            "--",
            "id",
            "-G"
        ]),
        "1000 50\n",
        "a user by name gets its supplementary groups"
    );
    // Nothing left to run is refused before anything is created.
    let out = d.mayfly(&["run", "--rm", "--entrypoint", "", "echoer"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("nothing to run"), "{out}");
    let out = d.mayfly(&["launch", "echoer", "--entrypoint", ""]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("nothing to run"), "{out}");

    // An instance shows the command and user it runs, resolved.
    d.ok(&[
        "launch",
        "echoer",
        "--name",
        "e1",
        "--no-start",
        "--",
        "x",
        "y",
    ]);
    let info = d.info("e1");
    assert_eq!(
        info["command"],
        json!(["/bin/echo", "from-entrypoint", "x", "y"]),
        "{info}"
    );
    assert_eq!(info["user"], "app", "{info}");
    d.ok(&[
        "launch",
        "echoer",
        "--name",
        "e2",
        "--no-start",
        "--user",
        "nobody:staff",
        "--entrypoint",
        "/bin/sh",
    ]);
    let info = d.info("e2");
    assert_eq!(info["command"], json!(["/bin/sh"]), "{info}");
    assert_eq!(info["user"], "nobody:staff", "{info}");
    let text = d.ok(&["info", "e2"]);
    assert!(text.contains("command:     /bin/sh"), "{text}");
    assert!(text.contains("user:        nobody:staff"), "{text}");
    // The built-in template has no entrypoint and no user: its cmd is the whole command,
    // run as root.
    let text = d.ok(&["template", "info", "busybox"]);
    for line in [
        "command:    /sbin/init",
        "entrypoint: -",
        "cmd:        /sbin/init",
        "user:       root (the default)",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
    d.ok(&["launch", "busybox", "--name", "bb", "--no-start"]);
    assert!(d.info("bb").get("user").is_none(), "{}", d.info("bb"));
    assert!(
        d.ok(&["info", "bb"])
            .contains("user:        root (the default)")
    );
    d.finish();
}

#[test]
fn a_user_by_name_gets_its_groups_and_exec_takes_the_user_or_its_own() {
    let d = TestDaemon::start();
    import_image(
        &d,
        "named",
        &[
            "--config.user",
            "nobody",
            "--config.cmd",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            IDLE,
        ],
    );
    d.ok(&["launch", "named", "--name", "n"]);
    // The init itself runs as nobody, with its supplementary group staff (50).
    assert_eq!(
        d.sh(
            "n",
            "grep -E '^(Uid|Gid|Groups):' /proc/1/status | tr -s '\\t ' ' '"
        ),
        "Uid: 65534 65534 65534 65534\nGid: 65534 65534 65534 65534\nGroups: 50 65534 \n"
    );
    // exec runs as the init's user unless told otherwise.
    assert_eq!(
        d.sh("n", WHO),
        format!("65534\n65534\n65534 50\n/home/nobody\n{NO_CAPS}")
    );
    assert_eq!(d.ok(&["exec", "--user", "0", "n", "--", "id", "-u"]), "0\n");
    assert_eq!(
        d.ok(&[
            "exec",
            "-u",
            "app",
            "n",
            "--",
            "sh",
            "-c",
            "id -u; id -g; id -G; echo $HOME"
        ]),
        "1000\n1000\n1000 50\n/srv/app\n"
    );
    // name:group: the group replaces the supplementary ones.
    assert_eq!(
        d.ok(&["exec", "-u", "app:staff", "n", "--", "id", "-G"]),
        "50\n"
    );
    // A uid without an entry runs with gid 0 and HOME /.
    assert_eq!(
        d.ok(&[
            "exec",
            "-u",
            "4242",
            "n",
            "--",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME"
        ]),
        "4242\n0\n/\n"
    );
    // An --env HOME wins over the passwd entry.
    assert_eq!(
        d.ok(&[
            "exec",
            "-e",
            "HOME=/tmp",
            "n",
            "--",
            "sh",
            "-c",
            "echo $HOME"
        ]),
        "/tmp\n"
    );
    // An unknown user or group is a clear error naming the file searched.
    let out = d.mayfly(&["exec", "-u", "ghost", "n", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr
            .contains("no user `ghost` in the instance's /etc/passwd"),
        "{out}"
    );
    let out = d.mayfly(&["exec", "-u", "app:ghosts", "n", "--", "true"]);
    assert!(
        out.stderr
            .contains("no group `ghosts` in the instance's /etc/group"),
        "{out}"
    );
    // An id the instance's user namespace does not map (65536 ids) is the user's error.
    let out = d.mayfly(&["exec", "-u", "70000", "n", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr
            .contains("cannot take uid 70000: not mapped in the instance's user namespace"),
        "{out}"
    );
    let (status, err) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "named", "name": "far", "user": "1:70000"})),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot take supplementary groups [70000]: not mapped"),
        "{err}"
    );
    assert_eq!(d.state_of("far"), None);
    // A malformed spec is refused before anything runs.
    let out = d.mayfly(&["exec", "-u", "a:b:c", "n", "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("invalid user `a:b:c`"), "{out}");
    // The instance's own files count: a user added inside is found by the next exec.
    d.ok(&[
        "exec",
        "-u",
        "0",
        "n",
        "--",
        "sh",
        "-c",
        "echo 'late:x:3000:3000::/late:/bin/sh' >> /etc/passwd",
    ]);
    assert_eq!(
        d.ok(&["exec", "-u", "late", "n", "--", "id", "-u"]),
        "3000\n"
    );
    d.finish();
}

#[test]
fn an_unknown_image_user_is_refused_at_launch_and_start_and_leaves_nothing() {
    let d = TestDaemon::start();
    import_image(
        &d,
        "ghostly",
        &[
            "--config.user",
            "ghost",
            "--config.cmd",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            IDLE,
        ],
    );
    let out = d.mayfly(&["launch", "ghostly", "--name", "g"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("cannot resolve user `ghost`: no user `ghost` in the instance's /etc/passwd"),
        "{out}"
    );
    assert!(out.stderr.contains("hint:"), "{out}");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    d.wait_instance_dirs(0);
    let out = d.mayfly(&["run", "--rm", "ghostly"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("no user `ghost`"), "{out}");
    assert!(d.instance_names().is_empty(), "{:?}", d.instance_names());
    // A stopped instance fails the same way at start, and stays.
    d.ok(&["launch", "ghostly", "--name", "g", "--no-start"]);
    let out = d.mayfly(&["start", "g"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("/etc/passwd"), "{out}");
    assert_eq!(d.state_of("g").as_deref(), Some("stopped"));
    // --user stands in for the image's.
    d.ok(&["launch", "ghostly", "--name", "ok", "--user", "nobody"]);
    assert_eq!(d.sh("ok", "id -u"), "65534\n");
    // An image user that is not even USER[:GROUP] is refused before anything is created.
    import_image(
        &d,
        "weird",
        &["--config.user", "a:b:c", "--config.cmd", "/bin/true"],
    );
    let out = d.mayfly(&["launch", "weird", "--name", "w"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("invalid default user of template `weird` `a:b:c`"),
        "{out}"
    );
    assert!(out.stderr.contains("--user"), "{out}");
    assert_eq!(d.state_of("w"), None);
    d.ok(&["run", "--rm", "--user", "0", "weird"]);
    d.finish();
}

#[test]
fn the_api_takes_user_and_entrypoint_and_refuses_bad_ones() {
    let d = TestDaemon::start();
    import_image(
        &d,
        "apiimg",
        &[
            "--config.user",
            "65534:65534",
            "--config.entrypoint",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            IDLE,
        ],
    );
    let (status, info) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({
            "template": "apiimg",
            "name": "api1",
            "user": "app",
            "entrypoint": ["/bin/sh", "-c"],
            "command": [IDLE],
        })),
    );
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["user"], "app", "{info}");
    assert_eq!(info["command"], json!(["/bin/sh", "-c", IDLE]), "{info}");
    assert_eq!(d.sh("api1", "id -u"), "1000\n");
    let (status, err) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "apiimg", "name": "api2", "user": "bad user"})),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_argument", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid user `bad user`"),
        "{err}"
    );
    let (status, err) = d.api(
        "POST",
        "/v1/instances",
        Some(&json!({"template": "apiimg", "name": "api3", "user": "nobody:nogroups"})),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_argument", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no group `nogroups` in the instance's /etc/group"),
        "{err}"
    );
    assert_eq!(d.state_of("api3"), None, "a failed launch leaves nothing");
    let (status, t) = d.api("GET", "/v1/templates/apiimg", None);
    assert_eq!(status, 200, "{t}");
    let config = &t["versions"][0]["config"];
    assert_eq!(config["user"], "65534:65534", "{t}");
    assert_eq!(strings(&config["entrypoint"]), ["/bin/sh"], "{t}");
    assert_eq!(strings(&config["cmd"]), ["-c", IDLE], "{t}");
    d.finish();
}

#[test]
fn published_and_application_templates_keep_the_image_defaults() {
    let d = TestDaemon::start();
    import_image(
        &d,
        "base",
        &[
            "--config.user",
            "nobody",
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            IDLE,
        ],
    );
    d.ok(&["launch", "base", "--name", "b", "--user", "0"]);
    d.ok(&["exec", "b", "--", "sh", "-c", "echo published > /marker"]);
    d.ok(&["publish", "b", "--as", "pub"]);
    let config = &template_info(&d, "pub")["versions"][0]["config"];
    assert_eq!(config["user"], "nobody", "{config}");
    assert_eq!(config["entrypoint"], json!(["/bin/sh", "-c"]), "{config}");
    assert_eq!(
        d.ok(&["run", "--rm", "pub", "--", "id -u; cat /marker"]),
        "65534\npublished\n"
    );
    // A patch keeps them too.
    d.ok(&[
        "template",
        "patch",
        "base",
        "--run",
        "echo patched > /patched",
    ]);
    assert_eq!(
        d.ok(&["run", "--rm", "base", "--", "id -u; cat /patched"]),
        "65534\npatched\n"
    );
    // An application template built over it starts from its defaults; one built with
    // --cmd has that whole command (no entrypoint) and still the user.
    d.ok(&[
        "template",
        "build",
        "app",
        "--from",
        "base",
        "--run",
        "echo app > /app",
    ]);
    assert_eq!(
        d.ok(&["run", "--rm", "app", "--", "id -u; cat /app"]),
        "65534\napp\n"
    );
    d.ok(&[
        "template",
        "build",
        "app2",
        "--from",
        "base",
        "--run",
        "true",
        "--cmd",
        r#"["/bin/sh", "-c", "id -un"]"#,
    ]);
    let config = &template_info(&d, "app2")["versions"][0]["config"];
    assert_eq!(config["entrypoint"], json!([]), "{config}");
    assert_eq!(
        config["cmd"],
        json!(["/bin/sh", "-c", "id -un"]),
        "{config}"
    );
    assert_eq!(d.ok(&["run", "--rm", "app2"]), "nobody\n");
    // Rebuilding app2 keeps its own command.
    d.ok(&[
        "template", "build", "app2", "--from", "base", "--run", "true",
    ]);
    assert_eq!(d.ok(&["run", "--rm", "app2"]), "nobody\n");
    assert_eq!(d.state_of("b").as_deref(), Some("running"));
    d.finish();
}

#[test]
fn a_user_that_is_not_root_owns_its_terminal() {
    let d = TestDaemon::start();
    d.ok(&["launch", "--name", "term", "busybox"]);
    // exec -t: a terminal of the instance's devpts, made for the user.
    let out = d.mayfly(&[
        "exec",
        "-t",
        "-u",
        "nobody",
        "term",
        "--",
        "sh",
        "-c",
        "id -u; stat -c 'owner=%u' $(tty); echo x > $(tty) && echo reopened",
    ]);
    assert_eq!(out.code, 0, "{out}");
    for want in ["65534", "owner=65534", "reopened"] {
        assert!(out.stdout.contains(want), "`{want}` missing: {out}");
    }
    // run -t: the init's terminal (the console) is given to the user too.
    let out = d.mayfly(&[
        "run",
        "--rm",
        "-t",
        "-u",
        "nobody",
        "busybox",
        "--",
        "sh",
        "-c",
        "stat -L -c 'owner=%u' /proc/self/fd/0; echo x > /dev/console && echo reopened",
    ]);
    assert_eq!(out.code, 0, "{out}");
    for want in ["owner=65534", "reopened"] {
        assert!(out.stdout.contains(want), "`{want}` missing: {out}");
    }
    d.ok(&["rm", "-f", "term"]);
    d.finish();
}

#[test]
fn hostile_account_files_never_stall_a_start_or_lead_outside() {
    let d = TestDaemon::start();
    d.ok(&["launch", "busybox", "--name", "h"]);
    let refused = |what: &str, mentions: &str| {
        let out = d.mayfly(&["exec", "-u", "nobody", "h", "--", "true"]);
        assert_eq!(out.code, 125, "{what}: {out}");
        assert!(
            out.stderr
                .contains("cannot read the instance's /etc/passwd to look up `nobody`")
                && out.stderr.contains(mentions),
            "{what}: {out}"
        );
        // Numeric ids need no file: root always gets in. (Not asked with `id`, which would
        // read the file itself.)
        let uid = "grep ^Uid: /proc/self/status | cut -f2";
        assert_eq!(d.ok(&["exec", "h", "--", "sh", "-c", uid]), "0\n", "{what}");
        assert_eq!(
            d.ok(&["exec", "-u", "65534:65534", "h", "--", "sh", "-c", uid]),
            "65534\n",
            "{what}"
        );
    };
    // A FIFO would block whoever opens it for reading.
    d.sh("h", "rm /etc/passwd && mkfifo /etc/passwd");
    refused("a FIFO", "not a regular file");
    // A magic link would lead through /proc to another root (or, in the exec helper, to the
    // forker's descriptors): not followed.
    d.sh(
        "h",
        "rm /etc/passwd && ln -s /proc/1/root/etc/group /etc/passwd",
    );
    refused("a magic link", "symbolic links");
    // A file past the size bound is not read.
    d.sh(
        "h",
        "rm /etc/passwd && head -c 5000000 /dev/zero > /etc/passwd",
    );
    refused("a huge file", "larger than 4 MiB");
    d.ok(&["rm", "-f", "h"]);
    d.finish();
}
