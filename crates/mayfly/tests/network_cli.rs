//! The command line and API of networks, channels and renames: bad input is refused with an
//! error that says what is wrong and what fits, and leaves nothing behind; the commands show
//! what they made (text and `--json`). Also: every test daemon runs in a network namespace of
//! its own, which `finish()` deletes.

mod common;

use common::{IDLE, TestDaemon, launch};
use serde_json::{Value, json};

/// The inode of a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
fn ns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path}: {e}"))
        .ino()
}

#[test]
fn the_test_daemon_runs_in_a_network_namespace_of_its_own_that_finish_deletes() {
    let d = TestDaemon::start();
    let ns = d.netns().to_owned();
    let file = format!("/run/netns/{ns}");
    let daemon = d.daemon_pid().expect("the daemon runs");
    let forker = d.forker_pid().expect("the forker runs");
    let theirs = ns_inode(&format!("/proc/{daemon}/ns/net"));
    assert_ne!(
        theirs,
        ns_inode("/proc/self/ns/net"),
        "the daemon runs in the test's own namespace"
    );
    assert_eq!(theirs, ns_inode(&file), "the daemon runs in {file}");
    assert_eq!(
        ns_inode(&format!("/proc/{forker}/ns/net")),
        theirs,
        "the forker too"
    );
    d.finish();
    assert!(
        !std::path::Path::new(&file).exists(),
        "finish() deleted the namespace {ns}"
    );
}

#[test]
fn finish_fails_on_a_link_or_an_nft_table_left_in_the_namespace_and_still_deletes_it() {
    for (leak, says) in [
        (
            &[
                "ip", "link", "add", "mfleak0", "type", "veth", "peer", "name", "mfleak1",
            ][..],
            "links remain",
        ),
        (
            &["nft", "add", "table", "inet", "mayfly"][..],
            "nft tables remain",
        ),
    ] {
        let d = TestDaemon::start();
        let ns = d.netns().to_owned();
        let dir = d.dir.clone();
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).args(leak);
        let out = common::run_command(cmd, None, common::CLI_TIMEOUT);
        assert!(out.success(), "{out}");
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.finish()))
            .expect_err("finish() fails on the leak");
        let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains(says), "{message}");
        assert!(
            !std::path::Path::new(&format!("/run/netns/{ns}")).exists(),
            "the namespace is deleted all the same"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bad_published_ports_and_networks_are_refused_before_anything_is_made() {
    let d = TestDaemon::start();
    for bad in [
        "80",
        "0:80",
        "8080:80/sctp",
        "70000:80",
        "1.2.3:8080:80",
        "a:b",
    ] {
        for verb in [&["launch"][..], &["run", "--rm"][..]] {
            let mut args = verb.to_vec();
            args.extend_from_slice(&["busybox", "--publish", bad]);
            let out = d.mayfly(&args);
            assert_eq!(out.code, 2, "`{}` is bad usage: {out}", args.join(" "));
            assert!(
                out.stderr
                    .contains(&format!("`{bad}` is not a published port"))
                    && out.stderr.contains("[HOST_IP:]HOST_PORT:PORT[/tcp|udp]")
                    && out.stderr.contains("8080:80"),
                "the error names the value and the accepted forms: {out}"
            );
        }
    }
    let out = d.mayfly(&["launch", "busybox", "-p", "8080:80/SCTP"]);
    assert!(out.stderr.contains("tcp or udp"), "{out}");

    let out = d.mayfly(&["launch", "busybox", "--network", "Back_End"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("`Back_End` is not a valid network name"),
        "{out}"
    );

    for args in [
        &["launch", "busybox", "--network", "none", "--network", "lan"][..],
        &["launch", "busybox", "--network", "lan", "--network", "none"][..],
        &[
            "run",
            "--rm",
            "busybox",
            "--network",
            "none",
            "--network",
            "lan",
        ][..],
    ] {
        let out = d.mayfly(args);
        assert_ne!(out.code, 0, "{out}");
        assert!(
            out.stderr
                .contains("`--network none` means no network: it cannot be combined"),
            "`{}`: {out}",
            args.join(" ")
        );
    }
    let out = d.mayfly(&["launch", "busybox", "--network", "none", "-p", "8080:80"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("--publish needs a network"), "{out}");

    assert!(d.instance_names().is_empty(), "nothing was created");
    d.finish();
}

#[test]
fn the_api_refuses_unknown_fields_and_bad_names_with_400() {
    let d = TestDaemon::start();
    launch(&d, "nc-a", &["--network", "none"], Some(IDLE));
    let cases: [(&str, &str, Value, &str); 8] = [
        (
            "/v1/networks",
            "POST",
            json!({"name": "lan", "subnett": "10.5.0.0/24"}),
            "unknown field `subnett`",
        ),
        (
            "/v1/networks",
            "POST",
            json!({"name": "Lan"}),
            "`Lan` is not a valid network name",
        ),
        (
            "/v1/networks",
            "POST",
            json!({"name": "none"}),
            "`none` is reserved",
        ),
        (
            "/v1/networks",
            "POST",
            json!({"subnet": "10.5.0.0/24"}),
            "missing field `name`",
        ),
        (
            "/v1/channels",
            "POST",
            json!({"name": "ch", "server": "nc-a", "client": "nc-a", "mode": "rw"}),
            "unknown field `mode`",
        ),
        (
            "/v1/channels",
            "POST",
            json!({"name": "Ch", "server": "nc-a", "client": "nc-b"}),
            "`Ch` is not a valid channel name",
        ),
        (
            "/v1/channels",
            "POST",
            json!({"name": "ch", "server": "nc-a", "client": "nc-a"}),
            "`nc-a` is both its server and its client",
        ),
        (
            "/v1/instances/nc-a/rename",
            "POST",
            json!({"new_name": "nc-b"}),
            "unknown field `new_name`",
        ),
    ];
    for (path, method, body, says) in cases {
        let (status, answer) = d.api(method, path, Some(&body));
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{method} {path} {body}: {answer}");
    }
    // The routes exist and take only their methods.
    for (method, path) in [
        ("PUT", "/v1/networks"),
        ("POST", "/v1/networks/lan"),
        ("GET", "/v1/channels/ch"),
        ("GET", "/v1/instances/nc-a/rename"),
    ] {
        let (status, answer) = d.api(method, path, None);
        assert_eq!(status, 405, "{method} {path}: {answer}");
    }
    d.ok(&["rm", "--force", "nc-a"]);
    d.finish();
}

#[test]
fn network_create_refuses_bad_names_subnets_and_name_servers() {
    let d = TestDaemon::start();
    for (args, says) in [
        (
            &["network", "create", "Lan"][..],
            "`Lan` is not a valid network name",
        ),
        (&["network", "create", "none"][..], "`none` is reserved"),
        (&["network", "create", "host"][..], "`host` is reserved"),
        (
            &["network", "create", "lan-"][..],
            "not a valid network name",
        ),
        (
            &["network", "create", "lan", "--subnet", "10.5.0.0/33"][..],
            "10.5.0.0/33",
        ),
        (
            &["network", "create", "lan", "--subnet", "10.5.0.0"][..],
            "10.5.0.0",
        ),
        (
            &["network", "create", "lan", "--subnet", "300.5.0.0/24"][..],
            "300.5.0.0/24",
        ),
        (
            &["network", "create", "lan", "--subnet", "lan"][..],
            "`lan`",
        ),
    ] {
        let out = d.mayfly(args);
        assert_eq!(out.code, 1, "`mayfly {}`: {out}", args.join(" "));
        assert!(
            out.stderr.contains(says) && out.stderr.contains("hint:"),
            "`mayfly {}` says what is wrong and what to do: {out}",
            args.join(" ")
        );
    }
    for body in [
        json!({"name": "lan", "subnet": "10.5.0.0/33"}),
        json!({"name": "lan", "subnet": "10.5.0.1/24"}),
        json!({"name": "lan", "dns_upstream": ["ns1.example"]}),
    ] {
        let (status, answer) = d.api("POST", "/v1/networks", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["hint"].is_string(), "{answer}");
    }

    let out = d.mayfly(&["network", "create", "lan", "--dns-upstream", "ns1"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--dns-upstream"), "{out}");
    d.finish();
}

// ---- the tests below need issue 21's engine (they fail against its stubs) ---------------

#[test]
fn bad_creations_make_nothing_and_unknown_names_are_404() {
    let d = TestDaemon::start();
    for args in [
        &["network", "create", "lan", "--subnet", "10.5.0.0/33"][..],
        &["network", "create", "Lan"][..],
    ] {
        d.fails(args);
    }
    for args in [
        &["network", "info", "nosuch"][..],
        &["network", "rm", "nosuch"][..],
        &["channel", "rm", "nosuch"][..],
    ] {
        let out = d.mayfly(args);
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains("nosuch"), "{out}");
    }
    assert_eq!(d.api("GET", "/v1/networks/nosuch", None).0, 404);

    assert_eq!(
        d.json(&["network", "list", "--json"]),
        json!([]),
        "nothing made"
    );
    d.finish();
}

#[test]
fn network_channel_and_rename_commands_show_what_they_made() {
    let d = TestDaemon::start();
    let out = d.ok(&["network", "create", "lan", "--subnet", "10.88.0.0/24"]);
    assert!(
        out.contains("created network lan") && out.contains("10.88.0.0/24"),
        "{out}"
    );
    let created = d.json(&["network", "info", "lan", "--json"]);
    assert_eq!(created["subnet"], "10.88.0.0/24", "{created}");
    let bridge = created["bridge"].as_str().expect("a bridge").to_owned();

    launch(
        &d,
        "web",
        &["--network", "lan", "-p", "8080:80"],
        Some(IDLE),
    );
    launch(&d, "calc", &["--network", "none"], Some(IDLE));
    let info = d.info("web");
    let iface = &info["interfaces"][0];
    assert_eq!(
        (&iface["network"], &iface["name"]),
        (&json!("lan"), &json!("eth0")),
        "{info}"
    );
    let ipv4 = iface["ipv4"].as_str().expect("an address").to_owned();
    let mac = iface["mac"].as_str().expect("a MAC").to_owned();
    assert_eq!(info["publish"], json!(["127.0.0.1:8080:80/tcp"]), "{info}");

    let text = d.ok(&["info", "web"]);
    assert!(
        text.contains("eth0 on network lan")
            && text.contains(&ipv4)
            && text.contains(&mac)
            && text.contains("127.0.0.1:8080:80/tcp"),
        "info shows the interface and the published port: {text}"
    );
    assert!(d.ok(&["info", "calc"]).contains("none (lo only)"));
    let list = d.ok(&["list"]);
    assert!(list.lines().next().unwrap_or("").contains("IPV4"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("web ") && l.contains(&ipv4)),
        "{list}"
    );

    let list = d.ok(&["network", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("lan ") && l.contains("10.88.0.0/24") && l.contains(&bridge)),
        "{list}"
    );
    let text = d.ok(&["network", "info", "lan"]);
    assert!(
        text.contains("web") && text.contains(&ipv4),
        "network info lists its interfaces: {text}"
    );
    let out = d.mayfly(&["network", "rm", "lan"]);
    assert_eq!(out.code, 1, "in use: {out}");
    assert!(
        out.stderr.contains("web"),
        "the refusal names the user: {out}"
    );

    // Channels.
    launch(&d, "db", &["--network", "none"], Some(IDLE));
    let out = d.ok(&[
        "channel", "create", "dbsock", "--server", "db", "--client", "calc",
    ]);
    assert!(
        out.contains("created channel dbsock") && out.contains("/run/mayfly/channels/dbsock"),
        "{out}"
    );
    let channels = d.json(&["channel", "list", "--json"]);
    assert_eq!(
        (
            &channels[0]["name"],
            &channels[0]["server"],
            &channels[0]["client"]
        ),
        (&json!("dbsock"), &json!("db"), &json!("calc")),
        "{channels}"
    );
    assert!(d.ok(&["channel", "list"]).contains("dbsock"));
    assert!(
        d.ok(&["channel", "rm", "dbsock"])
            .contains("removed channel dbsock")
    );
    assert_eq!(d.json(&["channel", "list", "--json"]), json!([]));

    // Rename.
    let out = d.ok(&["rename", "web", "www"]);
    assert!(out.contains("renamed web to www"), "{out}");
    assert_eq!(d.info("www")["interfaces"][0]["ipv4"], json!(ipv4));
    assert!(!d.mayfly(&["info", "web"]).success());
    let out = d.mayfly(&["rename", "www", "calc"]);
    assert_eq!(out.code, 1, "a taken name: {out}");
    let out = d.mayfly(&["rename", "www", "Bad_Name"]);
    assert_eq!(out.code, 1, "an invalid name: {out}");
    assert!(out.stderr.contains("Bad_Name"), "{out}");

    d.ok(&["rm", "--force", "www", "calc", "db"]);
    assert!(
        d.ok(&["network", "rm", "lan"])
            .contains("removed network lan")
    );
    d.finish();
}

#[test]
fn the_help_says_what_the_network_flags_and_nouns_do() {
    let help = |args: &[&str]| {
        let mut cmd = std::process::Command::new(common::bin());
        cmd.args(args).arg("--help");
        let out = common::run_command(cmd, None, common::CLI_TIMEOUT);
        assert!(out.success(), "{out}");
        out.stdout
    };
    for verb in ["launch", "run"] {
        let text = help(&[verb]);
        for says in [
            "--network <NAME|none>",
            "the network `default`, created at first use",
            "`none`: no interface but lo",
            "-p, --publish",
            "[HOST_IP:]HOST_PORT:PORT[/tcp|udp]",
            "0.0.0.0",
            "127.0.0.1",
        ] {
            assert!(text.contains(says), "`{verb} --help` lacks {says}:\n{text}");
        }
    }
    let top = help(&[]);
    for noun in ["network", "channel", "rename"] {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(noun)),
            "no `{noun}` in:\n{top}"
        );
    }
    assert!(help(&["channel", "create"]).contains("/run/mayfly/channels/NAME"));
    let create = help(&["network", "create"]);
    for says in [
        "--subnet <CIDR>",
        "--isolated",
        "--no-nat",
        "--dns-upstream <IP>",
    ] {
        assert!(create.contains(says), "{create}");
    }
}
