//! `template rm` and `template gc` of imported templates: refused while an instance (running
//! or stopped) uses the template, and removing only the layers no other template shares.

mod common;

use common::imports::{launch, layer_digests};
use common::{
    TestDaemon, assert_refused, layer_dir_name, layer_dirs, template_info, template_names,
};

// ---- tests: removal and garbage collection --------------------------------------------------

#[test]
fn template_rm_is_refused_while_used_and_removes_only_unshared_layers() {
    let d = TestDaemon::start();
    let x = d.dir.join("x");
    common::make_rootfs(&x, "shared");
    let y = d.dir.join("y");
    common::make_rootfs(&y, "solo");
    let (xs, ys) = (x.to_str().expect("utf-8"), y.to_str().expect("utf-8"));
    d.ok(&["template", "import", "shared-a", xs]);
    d.ok(&["template", "import", "shared-b", xs]);
    d.ok(&["template", "import", "solo", ys]);
    let shared = layer_digests(&d, "shared-a");
    assert_eq!(shared, layer_digests(&d, "shared-b"), "one tree, one layer");
    let solo = layer_digests(&d, "solo");
    assert_ne!(shared, solo);
    let shared_dir = layer_dir_name(&shared[0]);
    let solo_dir = layer_dir_name(&solo[0]);

    // In use by a running and by a stopped instance: refused, naming them.
    launch(&d, "solo", "user1");
    d.ok(&[
        "launch",
        "solo",
        "--name",
        "user2",
        "--no-start",
        "--",
        "true",
    ]);
    let out = d.mayfly(&["template", "rm", "solo"]);
    assert_refused(&out, "rm of a template in use", &["solo", "user1", "user2"]);
    assert!(template_names(&d).contains(&"solo".to_owned()));
    assert!(layer_dirs(&d).contains(&solo_dir));
    let info = template_info(&d, "solo");
    let mut users: Vec<String> = info["used_by"]
        .as_array()
        .expect("used_by")
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    users.sort();
    assert_eq!(users, ["user1", "user2"], "{info}");
    // Still usable: the running instance works, a new one starts.
    assert_eq!(d.sh("user1", "cat /marker"), "solo\n");
    launch(&d, "solo", "user3");
    assert_eq!(d.sh("user3", "cat /marker"), "solo\n");

    // gc never removes a layer in use.
    let gc = d.json(&["template", "gc", "--json"]);
    let removed: Vec<&str> = gc["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(removed.is_empty(), "gc removed layers in use: {gc}");
    assert!(layer_dirs(&d).contains(&solo_dir) && layer_dirs(&d).contains(&shared_dir));
    assert_eq!(d.sh("user3", "cat /marker"), "solo\n");

    // Once its instances are gone, it goes, and so does its layer (nothing else uses it).
    for u in ["user1", "user2", "user3"] {
        d.ok(&["rm", "--force", u]);
    }
    let out = d.mayfly(&["template", "rm", "solo"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "removed template solo\n", "{out}");
    assert!(!template_names(&d).contains(&"solo".to_owned()));
    assert!(
        !layer_dirs(&d).contains(&solo_dir),
        "the unshared layer is removed with its template"
    );
    assert_refused(
        &d.mayfly(&["template", "info", "solo"]),
        "info of a removed template",
        &["solo"],
    );

    // A shared layer stays while another template uses it, an instance of which still works.
    launch(&d, "shared-b", "onb");
    d.ok(&["template", "rm", "shared-a"]);
    assert!(
        layer_dirs(&d).contains(&shared_dir),
        "the layer shared-b uses was removed with shared-a"
    );
    assert_eq!(d.sh("onb", "cat /marker"), "shared\n");
    launch(&d, "shared-b", "onb2");
    assert_eq!(d.sh("onb2", "cat /marker"), "shared\n");
    let gc = d.json(&["template", "gc", "--json"]);
    assert!(
        gc["removed"].as_array().is_some_and(|r| r.is_empty()),
        "{gc}"
    );
    assert!(layer_dirs(&d).contains(&shared_dir));
    assert_refused(
        &d.mayfly(&["template", "rm", "shared-b"]),
        "rm of shared-b in use",
        &["onb"],
    );
    d.ok(&["rm", "--force", "onb", "onb2"]);
    d.ok(&["template", "rm", "shared-b"]);
    assert!(
        !layer_dirs(&d).contains(&shared_dir),
        "the last user is gone"
    );
    let gc = d.ok(&["template", "gc"]);
    assert!(gc.starts_with("removed 0 unused layer(s)"), "{gc}");
    // The built-in template is untouched by all this.
    assert_eq!(template_names(&d), ["busybox"]);
    d.ok(&["run", "--rm", "busybox", "--", "true"]);
    d.finish();
}
