//! Application templates on the built-in busybox template: their own layer only over a
//! shared base, stacked, conflicting ones refused unless ordered, applications over
//! applications and stale bases refused, and versions in use that cannot be removed.

mod common;

use common::{
    TestDaemon, digests, layer_dir_name, layer_dirs, running_version, template_exists,
    template_info, top_layer, version,
};

#[test]
fn application_templates_stack_and_conflicting_ones_are_refused_unless_ordered() {
    let d = TestDaemon::start();
    let base = template_info(&d, "busybox");
    let base_layers = digests(&version(&base, 1));
    let mut before = layer_dirs(&d);
    let x = |who: &str| {
        format!(
            "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho {who}\\n' > /usr/local/bin/x && chmod 755 /usr/local/bin/x && echo {who} > /etc/{who}-only"
        )
    };
    for (app, script) in [
        ("xa", x("a")),
        ("xb", x("b")),
        ("xc", "echo c > /etc/c-only".to_owned()),
    ] {
        d.ok(&[
            "template", "build", app, "--from", "busybox", "--run", &script,
        ]);
        let t = template_info(&d, app);
        let v = version(&t, 1);
        let layers = digests(&v);
        assert_eq!(layers.len(), base_layers.len() + 1, "{t}");
        assert_eq!(layers[..base_layers.len()], base_layers[..], "shared base");
        assert_eq!(v["app"], true, "{t}");
        assert_eq!(v["base"], "busybox@1", "{t}");
        let after = layer_dirs(&d);
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(
            new,
            vec![&layer_dir_name(layers.last().expect("a layer"))],
            "one new layer for {app}"
        );
        assert!(
            top_layer(&v)["size"].as_u64().expect("size") < 1024,
            "the application's layer holds only what its script wrote: {t}"
        );
        before = after;
    }

    // Two applications that do not conflict stack without --ordered; each one works.
    d.ok(&[
        "launch", "busybox", "--app", "xa", "--app", "xc", "--name", "ac",
    ]);
    assert_eq!(d.sh("ac", "/usr/local/bin/x").trim(), "a");
    assert_eq!(d.sh("ac", "cat /etc/a-only /etc/c-only"), "a\nc\n");

    // Two that write the same path differently are refused, naming it, and nothing is left.
    let refused = d.fails(&[
        "launch", "busybox", "--app", "xa", "--app", "xb", "--name", "ab",
    ]);
    let msg = format!("{}{}", refused.stdout, refused.stderr);
    assert_eq!(refused.code, 1, "{refused}");
    for word in ["usr/local/bin/x", "xa", "xb", "--ordered"] {
        assert!(msg.contains(word), "the refusal mentions {word}: {refused}");
    }
    assert!(
        !msg.contains("etc/a-only") && !msg.contains("etc/b-only"),
        "paths only one application has are no conflict: {refused}"
    );
    assert_eq!(d.state_of("ab"), None, "no half-created instance");

    // With --ordered the later one wins.
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "xa",
        "--app",
        "xb",
        "--ordered",
        "--name",
        "ab",
    ]);
    assert_eq!(d.sh("ab", "/usr/local/bin/x").trim(), "b");
    assert_eq!(d.sh("ab", "cat /etc/a-only /etc/b-only"), "a\nb\n");
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "xb",
        "--app",
        "xa",
        "--ordered",
        "--name",
        "ba",
    ]);
    assert_eq!(d.sh("ba", "/usr/local/bin/x").trim(), "a");

    // Not an application, an application over an application, and a stale base.
    let not_app = d.fails(&["launch", "busybox", "--app", "busybox", "--name", "n1"]);
    assert!(
        not_app.stderr.contains("not an application template"),
        "{not_app}"
    );
    let nested = d.fails(&["template", "build", "xd", "--from", "xa", "--run", "true"]);
    assert!(
        nested.stderr.contains("itself an application template"),
        "{nested}"
    );
    assert!(!template_exists(&d, "xd"));
    d.ok(&["template", "patch", "busybox", "--run", "echo 2 > /etc/two"]);
    let stale = d.fails(&["launch", "busybox@2", "--app", "xa", "--name", "n2"]);
    assert!(
        stale.stderr.contains("busybox@1") && stale.stderr.contains("busybox@2"),
        "the refusal says what the application was built on: {stale}"
    );
    assert_eq!(d.state_of("n2"), None, "no half-created instance");
    // A follower is held back on the version its application is built on.
    d.ok(&["launch", "busybox", "--app", "xa", "--name", "n2"]);
    assert_eq!(running_version(&d, "n2"), Some(1));
    d.ok(&["launch", "busybox@1", "--app", "xa", "--name", "n3"]);
    assert_eq!(d.sh("n3", "/usr/local/bin/x").trim(), "a");
    d.finish();
}

#[test]
fn an_application_template_in_use_cannot_be_removed() {
    let d = TestDaemon::start();
    d.ok(&[
        "template",
        "build",
        "tool",
        "--from",
        "busybox",
        "--run",
        "echo tool > /etc/tool",
    ]);
    let own = layer_dir_name(&digests(&version(&template_info(&d, "tool"), 1))[1]);
    d.ok(&["launch", "busybox", "--app", "tool", "--name", "user"]);
    let out = d.mayfly(&["template", "rm", "tool"]);
    assert!(
        !out.success(),
        "`template rm tool` must be refused while instance `user` stacks it: {out}"
    );
    assert!(
        out.stderr.contains("user"),
        "the refusal names the user: {out}"
    );
    d.ok(&["template", "gc"]);
    assert!(
        layer_dirs(&d).contains(&own),
        "the application's layer is kept while in use"
    );
    d.ok(&["restart", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool\n");

    // Versions of an application: one pinned by an instance, or run by a running follower,
    // stays; once nothing uses it, it can go.
    d.ok(&[
        "launch",
        "busybox",
        "--app",
        "tool@1",
        "--name",
        "pinned",
        "--no-start",
    ]);
    d.ok(&[
        "template",
        "patch",
        "tool",
        "--run",
        "echo tool-2 > /etc/tool",
    ]);
    let out = d.fails(&["template", "rm", "tool@1"]);
    assert!(
        out.stderr.contains("pinned") && out.stderr.contains("user"),
        "{out}"
    );
    d.ok(&["rm", "pinned"]);
    let out = d.fails(&["template", "rm", "tool@1"]);
    assert!(
        out.stderr.contains("user") && !out.stderr.contains("pinned"),
        "{out}"
    );
    d.ok(&["stop", "user"]);
    d.ok(&["template", "rm", "tool@1"]);
    d.ok(&["start", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool-2\n");
    // A running follower holds the version it runs, not the others.
    d.ok(&[
        "template",
        "patch",
        "tool",
        "--run",
        "echo tool-3 > /etc/tool",
    ]);
    d.ok(&["restart", "user"]);
    assert_eq!(d.sh("user", "cat /etc/tool"), "tool-3\n");
    d.ok(&["template", "rm", "tool@2"]);
    d.ok(&["rm", "--force", "user"]);
    d.ok(&["template", "rm", "tool"]);
    d.finish();
}
