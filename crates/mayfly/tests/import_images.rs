//! OCI image layouts and `docker save` archives as templates: one layer per image layer
//! (whiteouts, opaque directories, layers shared with other images), the image's defaults, and
//! hostile or lying images refused with nothing written outside.

mod common;
mod view;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use common::images::{
    OCI_TAR, OCI_TAR_GZ, docker_save, image_config, sha256_hex, write_oci_layout,
};
use common::imports::{Sentinels, import_bytes, layer_digests};
use common::{
    RawEntry, TestDaemon, assert_nothing_created, assert_refused, catalogue, gzip, layer_dir_name,
    layer_dirs, raw_tar, tar_of, template_info, wait_until, zstd,
};

// ---- tests: container images ----------------------------------------------------------------

/// The base layer of the test images: a root filesystem with files the next layers delete
/// or hide.
fn base_layer(d: &TestDaemon) -> Vec<u8> {
    let dir = d.dir.join("image-base");
    common::make_rootfs(&dir, "image");
    std::fs::write(dir.join("etc/doomed"), "delete me\n").expect("write");
    std::fs::write(dir.join("etc/kept"), "keep me\n").expect("write");
    std::fs::create_dir_all(dir.join("opt/app/sub")).expect("mkdir");
    std::fs::write(dir.join("opt/app/old"), "old\n").expect("write");
    std::fs::write(dir.join("opt/app/sub/deep"), "deep\n").expect("write");
    std::fs::create_dir_all(dir.join("srv")).expect("mkdir");
    std::fs::write(dir.join("srv/keep"), "srv\n").expect("write");
    std::fs::create_dir_all(dir.join("var/gone/inside")).expect("mkdir");
    std::fs::write(dir.join("var/gone/inside/f"), "f\n").expect("write");
    tar_of(&dir)
}

/// A changeset over [`base_layer`]: deletes `/etc/doomed` and the directory `/var/gone`
/// (whiteouts), replaces `/opt/app` by a directory holding only `new` (opaque), adds a file.
fn top_layer() -> Vec<u8> {
    raw_tar(&[
        RawEntry::dir("etc"),
        RawEntry::file("etc/.wh.doomed", b""),
        RawEntry::dir("var"),
        RawEntry::file("var/.wh.gone", b""),
        RawEntry::dir("opt/app"),
        RawEntry::file("opt/app/.wh..wh..opq", b""),
        RawEntry::file("opt/app/new", b"new\n"),
        RawEntry::dir("srv"),
        RawEntry::file("srv/added", b"added\n"),
    ])
}

const IMAGE_INIT: &str =
    "echo init:$FOO:$(pwd); trap 'exit 0' TERM INT; while :; do sleep 1000 & wait $!; done";

#[test]
fn oci_layout_and_docker_save_become_layered_templates_with_the_image_defaults() {
    let d = TestDaemon::start();
    let base = base_layer(&d);
    let top = top_layer();
    let config = image_config(
        &["FOO=from-image", "PATH=/bin", "EMPTY="],
        &["/bin/sh", "-c"],
        &[IMAGE_INIT],
        "/opt/app",
        &[sha256_hex(&base), sha256_hex(&top)],
    );
    let layout = d.dir.join("oci");
    write_oci_layout(
        &layout,
        &[(OCI_TAR, base.clone()), (OCI_TAR_GZ, gzip(&top))],
        &config,
    );
    let before = layer_dirs(&d);
    let out = d.mayfly(&["template", "import", "oci", layout.to_str().expect("utf-8")]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .starts_with("imported template oci version 1 (2 layers"),
        "{out}"
    );
    let oci_layers = layer_digests(&d, "oci");
    assert_eq!(oci_layers.len(), 2, "one layer per image layer");
    let new: HashSet<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        oci_layers
            .iter()
            .map(|l| layer_dir_name(l))
            .collect::<HashSet<_>>()
    );
    // The image's defaults.
    let info = template_info(&d, "oci");
    let cfg = &info["versions"][0]["config"];
    assert_eq!(
        cfg["command"],
        json!(["/bin/sh", "-c", IMAGE_INIT]),
        "{info}"
    );
    assert_eq!(
        cfg["env"],
        json!(["FOO=from-image", "PATH=/bin", "EMPTY="]),
        "{info}"
    );
    assert_eq!(cfg["workdir"], "/opt/app", "{info}");
    assert_eq!(cfg["stop_signal"], "SIGINT", "{info}");
    let text = d.ok(&["template", "info", "oci"]);
    assert!(text.contains("workdir:    /opt/app"), "{text}");
    assert!(text.contains("env:        FOO=from-image"), "{text}");

    // An instance: the init is the image's entrypoint + cmd, with its env and workdir; exec
    // gets them too; the deletions and the replaced directory show.
    d.ok(&["launch", "oci", "--name", "ocii"]);
    wait_until(Duration::from_secs(10), "the image's init to log", || {
        d.mayfly(&["logs", "ocii"])
            .stdout
            .contains("init:from-image:/opt/app")
    });
    assert_eq!(d.sh("ocii", "echo $FOO; pwd"), "from-image\n/opt/app\n");
    assert_eq!(
        d.sh(
            "ocii",
            "test -e /etc/doomed && echo doomed-present; test -e /var/gone && echo gone-present; \
             ls -A /opt/app; ls -A /etc; cat /etc/kept /srv/keep /srv/added /marker"
        ),
        // (/etc/hostname, hosts, machine-id and resolv.conf are mayfly's, mounted on mount
        // points of the instance's own: see tests/etc_files.rs and docs/boot.md.)
        "new\nhostname\nhosts\nkept\nmachine-id\npasswd\nresolv.conf\nkeep me\nsrv\nadded\nimage\n",
        "whiteouts delete, the opaque directory hides the lower one"
    );
    let tree = view::of_instance(&d, "ocii");
    assert!(
        !tree.keys().any(|k| k.contains(".wh.")),
        "whiteout names are visible: {:?}",
        tree.keys()
            .filter(|k| k.contains(".wh."))
            .collect::<Vec<_>>()
    );
    // Stopping uses the image's stop signal (the init exits on INT).
    d.ok(&["stop", "ocii"]);
    assert_eq!(d.state_of("ocii").as_deref(), Some("stopped"));
    let info = d.info("ocii");
    assert_eq!(info["last_exit"]["code"], 0, "{info}");

    // A docker save archive sharing the base layer (from a file, then from stdin): the base
    // layer directory is shared, only its own layer is new.
    let third = raw_tar(&[
        RawEntry::dir("srv"),
        RawEntry::file("srv/from-docker", b"docker\n"),
    ]);
    let dconfig = image_config(
        &["FOO=from-docker"],
        &[],
        &["/bin/sh", "-c", IMAGE_INIT],
        "/srv",
        &[sha256_hex(&base), sha256_hex(&third)],
    );
    let saved = docker_save(&[&base, &third], &dconfig);
    let before = layer_dirs(&d);
    let out = import_bytes(&d, "docker", "image.tar", &saved);
    assert_eq!(out.code, 0, "{out}");
    let docker_layers = layer_digests(&d, "docker");
    assert_eq!(docker_layers.len(), 2, "{docker_layers:?}");
    assert_eq!(
        docker_layers[0], oci_layers[0],
        "the base layer is shared by digest"
    );
    let new: Vec<String> = layer_dirs(&d).difference(&before).cloned().collect();
    assert_eq!(
        new,
        vec![layer_dir_name(&docker_layers[1])],
        "only the new layer is stored"
    );
    let out = d.mayfly_stdin(&["template", "import", "docker-stdin", "-"], &zstd(&saved));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(layer_digests(&d, "docker-stdin"), docker_layers);
    assert_eq!(layer_dirs(&d).difference(&before).count(), 1);
    let dcfg = &template_info(&d, "docker")["versions"][0]["config"];
    assert_eq!(
        dcfg["command"],
        json!(["/bin/sh", "-c", IMAGE_INIT]),
        "{dcfg}"
    );
    assert_eq!(dcfg["workdir"], "/srv", "{dcfg}");
    assert_eq!(dcfg["env"], json!(["FOO=from-docker"]), "{dcfg}");
    d.ok(&["launch", "docker", "--name", "dock"]);
    wait_until(
        Duration::from_secs(10),
        "the docker image's init to log",
        || {
            d.mayfly(&["logs", "dock"])
                .stdout
                .contains("init:from-docker:/srv")
        },
    );
    assert_eq!(
        d.sh(
            "dock",
            "echo $FOO; pwd; cat from-docker; test -e /etc/doomed && echo yes"
        ),
        "from-docker\n/srv\ndocker\nyes\n"
    );

    // Removing the OCI template keeps the shared base layer for the docker ones.
    d.ok(&["rm", "--force", "ocii"]);
    d.ok(&["template", "rm", "oci"]);
    let dirs = layer_dirs(&d);
    assert!(
        dirs.contains(&layer_dir_name(&oci_layers[0])),
        "shared base removed"
    );
    assert!(
        !dirs.contains(&layer_dir_name(&oci_layers[1])),
        "unshared top kept"
    );
    assert_eq!(d.sh("dock", "cat /marker"), "image\n");
    d.ok(&["rm", "--force", "dock"]);
    d.finish();
}

#[test]
fn hostile_images_are_refused_and_write_nothing_outside() {
    let d = TestDaemon::start();
    let s = Sentinels::plant(&d);
    let base = base_layer(&d);
    let config = image_config(&[], &[], &["/bin/sh"], "/", &[]);
    let far = s.far.to_str().expect("utf-8").to_owned();

    // Layers that climb out, write through a symlink, or whiteout through one.
    let climbing = raw_tar(&[RawEntry::file("../../../../sentinel/evil", b"pwned")]);
    let through = raw_tar(&[
        RawEntry::symlink("srv", &far),
        RawEntry::file("srv/evil", b"x"),
    ]);
    let wh_through = raw_tar(&[
        RawEntry::symlink("lnk", &s.near.to_string_lossy()),
        RawEntry::file("lnk/.wh.keep", b""),
    ]);
    let opq_through = raw_tar(&[
        RawEntry::symlink("lnk2", &s.near.to_string_lossy()),
        RawEntry::file("lnk2/.wh..wh..opq", b""),
    ]);
    let wh_dotdot = raw_tar(&[RawEntry::file(".wh..", b"")]);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "layer climbing out",
            climbing,
            vec!["../../../../sentinel/evil"],
        ),
        ("layer writing through a symlink", through, vec!["srv/evil"]),
        (
            "opaque marker through a symlink",
            opq_through,
            vec!["lnk2/.wh..wh..opq"],
        ),
        ("whiteout of ..", wh_dotdot, vec![".wh.."]),
    ];
    for (case, layer, mentions) in &cases {
        let before = catalogue(&d);
        // As an OCI layout directory...
        let layout = d.dir.join("evil-oci");
        let _ = std::fs::remove_dir_all(&layout);
        write_oci_layout(
            &layout,
            &[(OCI_TAR, base.clone()), (OCI_TAR, layer.clone())],
            &config,
        );
        let out = d.mayfly(&[
            "template",
            "import",
            "evil",
            layout.to_str().expect("utf-8"),
        ]);
        assert_refused(&out, case, mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
        // ... and as a docker save archive.
        let out = import_bytes(
            &d,
            "evil",
            "evil-save.tar",
            &docker_save(&[&base, layer], &config),
        );
        assert_refused(&out, &format!("{case} (docker save)"), mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }

    // A whiteout below a symlink the layer made is a no-op (umoci writes them for directories
    // that became symlinks): it is imported, and nothing is followed or written outside.
    let before = catalogue(&d);
    let layout = d.dir.join("wh-oci");
    write_oci_layout(
        &layout,
        &[(OCI_TAR, base.clone()), (OCI_TAR, wh_through)],
        &config,
    );
    let out = d.mayfly(&["template", "import", "wh", layout.to_str().expect("utf-8")]);
    assert_eq!(out.code, 0, "whiteout below a symlink: {out}");
    s.assert_untouched("whiteout below a symlink");
    let top = layer_digests(&d, "wh")[1].clone();
    let top_dir = d.state.join("layers").join(layer_dir_name(&top));
    assert_eq!(common::dir_entries(&top_dir), vec!["lnk".to_owned()]);
    assert!(
        std::fs::symlink_metadata(top_dir.join("lnk"))
            .expect("lnk")
            .file_type()
            .is_symlink()
    );
    d.ok(&["template", "rm", "wh"]);
    assert_nothing_created(&d, &before, "whiteout below a symlink, removed");

    // Image metadata that points outside or lies.
    let before = catalogue(&d);
    let layout = d.dir.join("lying-oci");
    write_oci_layout(&layout, &[(OCI_TAR, base.clone())], &config);
    // A layer blob that does not match its digest.
    let blobs = layout.join("blobs/sha256");
    let base_hex = sha256_hex(&base);
    let mut tampered = base.clone();
    let n = tampered.len() / 3;
    tampered[n] ^= 1;
    std::fs::write(blobs.join(&base_hex), &tampered).expect("tamper");
    let out = d.mayfly(&[
        "template",
        "import",
        "lying",
        layout.to_str().expect("utf-8"),
    ]);
    assert_refused(&out, "tampered blob", &[&base_hex]);
    assert_nothing_created(&d, &before, "tampered blob");

    // docker save archives whose manifest names files outside the image, directly or through
    // a symlink the archive plants (docker save links a repeated layer to its first copy, so
    // a symlink that stays inside is fine; one that leaves is not).
    let near_keep = format!("{}/keep", s.near.display());
    let config_entry = RawEntry::file("config.json", &config);
    for (case, layer_path, extra, mentions) in [
        (
            "layer path climbing out",
            "../../sentinel/keep",
            vec![],
            vec!["../../sentinel/keep"],
        ),
        (
            "absolute layer path",
            near_keep.as_str(),
            vec![],
            vec![near_keep.as_str()],
        ),
        (
            "layer symlinked to a host file",
            "evil/layer.tar",
            vec![
                RawEntry::dir("evil"),
                RawEntry::symlink("evil/layer.tar", &near_keep),
            ],
            vec!["evil/layer.tar"],
        ),
        (
            "layer symlinked out by a relative path",
            "evil/layer.tar",
            vec![
                RawEntry::dir("evil"),
                RawEntry::symlink("evil/layer.tar", "../../../../../sentinel/keep"),
            ],
            vec!["evil/layer.tar"],
        ),
    ] {
        let manifest = json!([{"Config": "config.json", "Layers": [layer_path]}]).to_string();
        let mut entries = vec![
            config_entry.clone(),
            RawEntry::file("manifest.json", manifest.as_bytes()),
        ];
        entries.extend(extra);
        let out = import_bytes(&d, "evil", "evil-manifest.tar", &raw_tar(&entries));
        assert_refused(&out, case, &mentions);
        s.assert_untouched(case);
        assert_nothing_created(&d, &before, case);
    }

    // An OCI layout directory whose layer blob is a symlink to a file outside it (with the
    // right digest): refused, the outside file is not read into a template.
    let outside = d.dir.join("outside-layer.tar");
    std::fs::write(&outside, &base).expect("write");
    let layout = d.dir.join("symlinked-oci");
    write_oci_layout(&layout, &[(OCI_TAR, base.clone())], &config);
    let blob = layout.join("blobs/sha256").join(sha256_hex(&base));
    std::fs::remove_file(&blob).expect("rm blob");
    std::os::unix::fs::symlink(&outside, &blob).expect("symlink");
    let out = d.mayfly(&[
        "template",
        "import",
        "evil",
        layout.to_str().expect("utf-8"),
    ]);
    assert_refused(
        &out,
        "blob symlinked outside the layout",
        &[&sha256_hex(&base)],
    );
    assert_nothing_created(&d, &before, "blob symlinked outside the layout");
    d.finish();
}
