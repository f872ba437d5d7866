//! The real cloud-init of a Debian template carries out the user data from mayfly's NoCloud
//! seed (issue 23 §1). One slow test: it builds a Debian template with cloud-init (the
//! downloads come from the shared cache of the Debian tests).

mod common;

use std::time::Duration;

use common::debian::*;
use common::wait_until;

#[test]
fn cloud_init_in_the_template_does_the_user_data_from_the_nocloud_seed() {
    let (_lock, d) = debian_daemon();
    long_ok(
        &d,
        &["template", "build", "ci", "--debian", "bookworm"],
        DEBOOTSTRAP_TIMEOUT,
    );
    long_ok(
        &d,
        &["template", "patch", "ci", "--packages", "cloud-init"],
        Duration::from_secs(600),
    );
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("cc.yaml");
    // `bootcmd` and `locale` are outside mayfly's own subset: accepted because cloud-init
    // handles them (`locale: false`: a minimal Debian has no `locales` for its default).
    std::fs::write(
        &ud,
        "#cloud-config\n\
         locale: false\n\
         bootcmd:\n\
         - echo booted > /run/bootcmd-marker\n\
         write_files:\n\
         - path: /etc/from-cloud-init.txt\n\
         \x20 content: written by cloud-init\n\
         \x20 permissions: '0640'\n\
         runcmd:\n\
         - echo runcmd-ran > /root/runcmd-marker\n",
    )
    .unwrap();
    let ud = ud.display().to_string();
    d.ok(&[
        "launch",
        "ci",
        "--name",
        "c1",
        "--user-data",
        &ud,
        "--meta",
        "role=ci-test",
    ]);
    let id = d.info("c1")["id"].as_str().unwrap().to_owned();
    assert_eq!(d.info("c1")["user_data"]["handler"], "cloud-init");
    wait_until(Duration::from_secs(240), "cloud-init to finish", || {
        let s = d.info("c1")["user_data"]["status"]["state"].clone();
        s == "done" || s == "failed"
    });
    let info = d.info("c1");
    assert_eq!(
        info["user_data"]["status"]["state"],
        "done",
        "{info}\n{}",
        d.mayfly(&[
            "exec",
            "c1",
            "--",
            "sh",
            "-c",
            "cat /run/cloud-init/result.json; tail -50 /var/log/cloud-init.log"
        ])
    );
    assert_eq!(
        d.sh("c1", "cat /etc/from-cloud-init.txt"),
        "written by cloud-init"
    );
    assert_eq!(
        d.sh("c1", "stat -c %a /etc/from-cloud-init.txt").trim(),
        "640"
    );
    assert_eq!(d.sh("c1", "cat /root/runcmd-marker"), "runcmd-ran\n");
    assert_eq!(d.sh("c1", "cat /run/bootcmd-marker"), "booted\n");
    // Its instance-id is mayfly's id; the seed is read-only; the network left to mayfly.
    assert_eq!(d.sh("c1", "cat /var/lib/cloud/data/instance-id").trim(), id);
    let out = d.mayfly(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo x > /var/lib/cloud/seed/nocloud/user-data",
    ]);
    assert!(!out.success() && out.stderr.contains("Read-only"), "{out}");
    assert!(
        d.sh("c1", "cat /var/lib/cloud/seed/nocloud/network-config")
            .contains("disabled")
    );
    // … and cloud-init understood it (bookworm's 22.4 reads only a top-level `config:`).
    let log = d.sh("c1", "cat /var/log/cloud-init.log");
    assert!(
        log.contains("network config is disabled by ds"),
        "{}",
        log.lines()
            .filter(|l| l.contains("etwork"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The metadata is cloud-init's meta-data too.
    assert_eq!(
        d.sh("c1", "cloud-init query ds.meta_data.meta.role").trim(),
        "ci-test"
    );
    // meta.json is there too.
    assert!(d.sh("c1", "cat /run/mayfly/meta.json").contains(&id));
    // Once it stopped, `info` still shows how cloud-init's last run ended.
    d.ok(&["stop", "c1"]);
    let stopped = d.info("c1");
    assert_eq!(stopped["user_data"]["status"]["state"], "done", "{stopped}");
    d.ok(&["rm", "-f", "c1"]);
    // A command that boots no init never runs cloud-init: mayfly's runner takes the user
    // data, and formats only cloud-init reads are refused.
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\necho by-mayfly > /root/runner-marker\n").unwrap();
    let script = script.display().to_string();
    d.ok(&[
        "launch",
        "ci",
        "--name",
        "c2",
        "--user-data",
        &script,
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(d.info("c2")["user_data"]["handler"], "mayfly");
    wait_until(Duration::from_secs(30), "the runner to finish", || {
        d.info("c2")["user_data"]["status"]["state"] == "done"
    });
    assert_eq!(d.sh("c2", "cat /root/runner-marker"), "by-mayfly\n");
    let inc = dir.path().join("inc.txt");
    std::fs::write(&inc, "#include\nhttp://192.0.2.1/x\n").unwrap();
    let inc = inc.display().to_string();
    let out = d.fails(&[
        "launch",
        "ci",
        "--name",
        "c3",
        "--user-data",
        &inc,
        "--",
        "sleep",
        "600",
    ]);
    assert!(out.stderr.contains("without cloud-init"), "{out}");
    d.ok(&["rm", "-f", "c2"]);
    d.finish();
}
