//! Template storage: layers deduplicated by digest, one layer per patch whatever the number
//! of followers, gc that never removes a layer in use, and stacks past the depth limit
//! squashed with identical content.

mod common;
mod view;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use common::{
    TestDaemon, digests, layer_dir_name, layer_dirs, running_version, strings, template_info,
    top_layer, version, write_tree,
};

/// Total bytes of regular files below `dir`.
fn bytes_below(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[test]
fn identical_trees_are_stored_once() {
    let d = TestDaemon::start();
    let src = d.dir.join("tree");
    common::make_rootfs(&src, "same");
    let before = layer_dirs(&d);
    let path = src.to_str().expect("utf-8");
    d.ok(&["template", "import", "one", path]);
    d.ok(&["template", "import", "two", path]);
    let (a, b) = (
        digests(&version(&template_info(&d, "one"), 1)),
        digests(&version(&template_info(&d, "two"), 1)),
    );
    assert_eq!(a, b, "the same tree has the same digest");
    let after = layer_dirs(&d);
    assert_eq!(
        after.difference(&before).cloned().collect::<Vec<_>>(),
        vec![layer_dir_name(&a[0])],
        "two templates from one tree store one layer"
    );

    // The same patch tree laid over two templates: one layer.
    let patch = d.dir.join("patch");
    write_tree(&patch, &[("etc/patched", "yes\n")]);
    let p = patch.to_str().expect("utf-8");
    d.ok(&["template", "patch", "one", "--from", p]);
    d.ok(&["template", "patch", "busybox", "--from", p]);
    let top_one = digests(&version(&template_info(&d, "one"), 2))[1].clone();
    let top_bb = digests(&version(&template_info(&d, "busybox"), 2))[1].clone();
    assert_eq!(top_one, top_bb);
    let after2 = layer_dirs(&d);
    assert_eq!(
        after2.difference(&after).cloned().collect::<Vec<_>>(),
        vec![layer_dir_name(&top_one)],
        "one layer for the same patch on two templates"
    );
    d.ok(&["launch", "one", "--name", "i1", "--", "sleep", "1000"]);
    d.ok(&["launch", "busybox", "--name", "i2"]);
    for i in ["i1", "i2"] {
        assert_eq!(d.sh(i, "cat /etc/patched"), "yes\n");
    }
    assert_eq!(d.sh("i1", "cat /marker"), "same\n");
    d.finish();
}

#[test]
fn patching_the_same_tree_twice_stores_one_layer_and_the_version_still_starts() {
    let d = TestDaemon::start();
    let patch = d.dir.join("patch");
    write_tree(&patch, &[("etc/patched", "yes\n")]);
    let p = patch.to_str().expect("utf-8");
    d.ok(&["template", "patch", "busybox", "--from", p]);
    let once = layer_dirs(&d);
    d.ok(&["template", "patch", "busybox", "--from", p]);
    assert_eq!(layer_dirs(&d), once, "the identical tree is stored once");
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 3, "{t}");
    // Version 3 has the same layer twice; it must still be usable.
    let out = d.mayfly(&["launch", "busybox", "--name", "twice"]);
    assert!(
        out.success(),
        "a version whose stack holds the same layer twice cannot start: {out}"
    );
    assert_eq!(d.sh("twice", "cat /etc/patched"), "yes\n");
    let patched = d.mayfly(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo 4 > /etc/four",
    ]);
    assert!(patched.success(), "patching over it fails: {patched}");
    d.finish();
}

#[test]
fn a_patch_rolled_out_to_many_followers_costs_one_layer() {
    let d = TestDaemon::start();
    let followers = ["n1", "n2", "n3", "n4", "n5", "n6"];
    for f in followers {
        d.ok(&["launch", "busybox", "--name", f]);
    }
    let before = layer_dirs(&d);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "mkdir -p /srv && head -c 65536 /dev/urandom > /srv/blob",
    ]);
    let top = top_layer(&version(&template_info(&d, "busybox"), 2));
    let new: Vec<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        vec![layer_dir_name(top["digest"].as_str().expect("digest"))],
        "one new layer"
    );
    assert!(top["size"].as_u64().expect("size") >= 65536, "{top}");
    d.ok(&["template", "rollout", "busybox", "--wave", "3"]);
    let sum: BTreeSet<String> = followers
        .iter()
        .map(|f| {
            let out = d.sh(f, "md5sum /srv/blob");
            out.split_whitespace().next().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(sum.len(), 1, "every follower sees the same blob: {sum:?}");
    let after: HashSet<String> = layer_dirs(&d);
    assert_eq!(after.len(), before.len() + 1, "instances add no layers");
    let instances = bytes_below(&d.state.join("instances"));
    assert!(
        instances < 65536,
        "the followers' directories hold {instances} bytes: the patch was not copied into them"
    );
    for f in followers {
        assert!(
            d.info(f)["writable_bytes"].as_u64().unwrap_or(0) < 65536,
            "{f}: {}",
            d.info(f)
        );
    }
    d.finish();
}

#[test]
fn gc_removes_what_nothing_references_and_never_a_layer_in_use() {
    let d = TestDaemon::start();
    let layer_of = |v: u64| {
        let t = template_info(&d, "busybox");
        layer_dir_name(digests(&version(&t, v)).last().expect("a layer"))
    };
    let l1 = layer_of(1);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo two > /etc/two",
    ]);
    let l2 = layer_of(2);
    d.ok(&["launch", "busybox@2", "--name", "pin"]);
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo three > /etc/three",
    ]);
    let l3 = layer_of(3);
    d.ok(&["launch", "busybox", "--name", "keeper", "--persistent"]);
    d.sh("keeper", "echo kept > /root/kept");
    d.ok(&["snapshot", "create", "keeper", "s1"]);
    // Only the snapshot holds version 3 now.
    d.ok(&["template", "rollback", "busybox", "--to", "2"]);
    d.ok(&["reset", "keeper"]);
    assert_eq!(running_version(&d, "keeper"), Some(2));

    let refused = d.fails(&["template", "rm", "busybox@3"]);
    assert!(
        refused.stderr.contains("keeper/s1"),
        "the snapshot holds version 3: {refused}"
    );
    let refused = d.fails(&["template", "rm", "busybox@2"]);
    assert!(refused.stderr.contains("current"), "{refused}");
    // Version 1 is used by nobody; its layer is also version 2's and stays.
    d.ok(&["template", "rm", "busybox@1"]);
    assert!(layer_dirs(&d).contains(&l1), "a layer of version 2 is kept");

    // A tree that no version references (as a crash between rename and commit leaves).
    let stray = format!("blake3-{}", "a".repeat(64));
    write_tree(
        &d.state.join("layers").join(&stray),
        &[("etc/stray", "x\n")],
    );
    let report = d.json(&["template", "gc", "--json"]);
    assert_eq!(
        strings(&report["removed"]),
        vec![stray.clone()],
        "gc removes exactly the unreferenced tree: {report}"
    );
    let left = layer_dirs(&d);
    assert!(!left.contains(&stray));
    for l in [&l1, &l2, &l3] {
        assert!(left.contains(l), "gc kept {l}: {left:?}");
    }
    d.ok(&["restart", "pin"]);
    assert_eq!(d.sh("pin", "cat /etc/two"), "two\n");
    d.ok(&["snapshot", "restore", "keeper", "s1"]);
    assert_eq!(d.sh("keeper", "cat /etc/three /root/kept"), "three\nkept\n");
    let report = d.json(&["template", "gc", "--json"]);
    assert_eq!(
        strings(&report["removed"]),
        Vec::<String>::new(),
        "{report}"
    );

    // Released, version 3 can go, and its own layer with it.
    d.ok(&["reset", "keeper"]);
    d.ok(&["snapshot", "rm", "keeper", "s1"]);
    d.ok(&["template", "rm", "busybox@3"]);
    d.ok(&["template", "gc"]);
    let left = layer_dirs(&d);
    assert!(
        !left.contains(&l3),
        "version 3's own layer is gone: {left:?}"
    );
    assert!(left.contains(&l1) && left.contains(&l2), "{left:?}");
    d.finish();
}

#[test]
fn a_stack_past_the_depth_limit_is_squashed_with_identical_content() {
    let d = TestDaemon::start();
    // 31 patches over the one-layer busybox: 32 layers, the limit. Some are scripts that
    // delete, overwrite and replace (whiteouts and opaque directories in the stack).
    for i in 1..=31 {
        match i {
            8 => d.ok(&["template", "patch", "busybox", "--run", "rm /bin/rev /etc/q3"]),
            15 => d.ok(&[
                "template",
                "patch",
                "busybox",
                "--run",
                "echo overwritten > /etc/q5 && rm -rf /root && mkdir -p /root/fresh && echo f > /root/fresh/f",
            ]),
            22 => d.ok(&[
                "template",
                "patch",
                "busybox",
                "--run",
                "ln -s /etc/q1 /etc/link && mkdir -p /var/empty-dir && chmod 0700 /etc/q2",
            ]),
            _ => {
                let dir = d.dir.join(format!("p{i}"));
                write_tree(
                    &dir,
                    &[
                        (&format!("etc/q{i}"), &format!("{i}\n")),
                        (&format!("usr/share/q/{}", i % 4), &format!("v{i}\n")),
                    ],
                );
                d.ok(&[
                    "template",
                    "patch",
                    "busybox",
                    "--from",
                    dir.to_str().expect("utf-8"),
                ])
            }
        };
    }
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 32);
    assert_eq!(digests(&version(&t, 32)).len(), 32, "at the limit: {t}");
    d.ok(&["launch", "busybox", "--name", "deep"]);
    let deep = view::of_instance(&d, "deep");
    for p in ["etc/q31", "root/fresh/f", "etc/link", "usr/share/q/3"] {
        assert!(deep.contains_key(p), "{p} in the deep view");
    }
    for p in ["bin/rev", "etc/q3"] {
        assert!(!deep.contains_key(p), "{p} is deleted in the deep view");
    }

    // One more (empty) layer: past the limit, the version is squashed into one layer.
    let empty = d.dir.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--from",
        empty.to_str().expect("utf-8"),
    ]);
    let t = template_info(&d, "busybox");
    assert_eq!(t["current_version"], 33);
    assert_eq!(
        digests(&version(&t, 33)).len(),
        1,
        "squashed into one layer: {t}"
    );
    d.ok(&["restart", "deep"]);
    assert_eq!(running_version(&d, "deep"), Some(33));
    view::assert_same(
        "32 layers -> squashed",
        &deep,
        &view::of_instance(&d, "deep"),
    );
    assert_eq!(
        d.sh("deep", "cat /etc/q5 /usr/share/q/3"),
        "overwritten\nv31\n"
    );

    // The squashed version patches like any other.
    d.ok(&[
        "template",
        "patch",
        "busybox",
        "--run",
        "echo after > /etc/after",
    ]);
    assert_eq!(
        digests(&version(&template_info(&d, "busybox"), 34)).len(),
        2
    );
    d.ok(&["restart", "deep"]);
    assert_eq!(d.sh("deep", "cat /etc/after /etc/q31"), "after\n31\n");
    d.finish();
}
