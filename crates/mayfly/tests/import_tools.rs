//! Images as the real tools make them, built at test time from the host's busybox (no
//! network): umoci layouts with several tags, buildah images (overlay storage, so that a
//! directory removed and recreated is an opaque directory), and skopeo's `docker-archive` and
//! `oci-archive` copies of them. Each imported template's tree, flattened from its layers, must
//! equal what `umoci unpack` makes of the same image, entry by entry: type, mode, owner, size,
//! content, link target, device, xattrs (but overlayfs's own), mtime and hard links.
//!
//! The tools must be installed (`scripts/install-deps`); a missing one fails the test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use common::tools::{
    Buildah, Umoci, assert_same_listing, flatten_template, layer_blobs, listing,
    merge_docker_archives, skopeo_copy, tar_names,
};
use common::{
    TestDaemon, assert_nothing_created, assert_refused, catalogue, http_with, make_rootfs,
    template_names,
};

/// The base image's tree: a busybox root with what the next layer deletes, replaces or
/// changes, and the entry kinds and attributes a layer carries (owners, setuid, sticky, a
/// fifo, a device, a hard link, xattrs, old mtimes).
fn populate_base(root: &Path) {
    make_rootfs(root, "tools");
    let write = |rel: &str, data: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    write("etc/doomed", "deleted by the next layer\n");
    write("etc/kept", "kept\n");
    write("opt/d2f/inner", "the directory becomes a file\n");
    write("opt/d2l/inner", "the directory becomes a symlink\n");
    write("opt/d2l/sub/deep", "deep\n");
    write("var/gone/inside/f", "the directory is deleted\n");
    write("srv/again/a", "a\n");
    write("srv/again/b", "b\n");
    write("srv/target-one", "one\n");
    write("srv/target-two", "two\n");
    write("bin/setuid", "#!/bin/sh\n");
    std::os::unix::fs::symlink("target-one", root.join("srv/link")).expect("symlink");
    std::os::unix::fs::symlink("/etc", root.join("srv/l2")).expect("symlink");
    std::fs::hard_link(root.join("etc/kept"), root.join("etc/hard")).expect("hard link");
    let chown = |rel: &str, id: u32| {
        std::os::unix::fs::lchown(root.join(rel), Some(id), Some(id)).expect("chown");
    };
    chown("etc/kept", 1000);
    chown("srv/again", 1001);
    chown("srv/link", 1002);
    let chmod = |rel: &str, mode: u32| {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    };
    chmod("etc/kept", 0o600);
    chmod("bin/setuid", 0o4755);
    chmod("tmp", 0o1777);
    chmod("srv/again", 0o750);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("srv/fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("srv/null").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    for (rel, value) in [("etc/kept", "on a file"), ("opt", "on a directory")] {
        rustix::fs::lsetxattr(
            root.join(rel).as_path(),
            "user.mayfly.note",
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
    }
    // An old mtime on a file and a directory (set last: creating children changes it).
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    };
    for rel in ["etc/doomed", "srv"] {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join(rel).as_path(),
            &old,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("utimensat");
    }
}

/// The changes of the second layer, as a shell script (buildah runs it inside the image) or
/// the same by hand on an unpacked tree (umoci): whiteouts (a file, a whole directory), a
/// directory that becomes a file, one that becomes a symlink, a symlink retargeted, a symlink
/// that becomes a directory, a directory removed and recreated, changed owner, mode, content.
const CHANGES: &str = "set -e
rm /etc/doomed
rm -r /var/gone
rm -r /opt/d2f && echo 'now a file' > /opt/d2f
rm -r /opt/d2l && busybox ln -s /etc /opt/d2l
rm /srv/link && busybox ln -s target-two /srv/link
rm /srv/l2 && mkdir /srv/l2 && echo inside > /srv/l2/file
rm -r /srv/again && mkdir /srv/again && echo c > /srv/again/c
busybox chmod 0640 /etc/kept && busybox chown 1001:1001 /etc/kept
echo more >> /marker
";

/// [`CHANGES`] applied to the tree at `root` (umoci's unpacked images), chrooted into it as
/// buildah runs it.
fn apply_changes(root: &Path) {
    common::tools::tool(
        "chroot",
        &[root.to_str().expect("utf-8"), "/bin/sh", "-c", CHANGES],
    );
}

/// A third layer: the symlink the second made of a directory becomes a file again.
fn apply_third(root: &Path) {
    std::fs::remove_file(root.join("opt/d2l")).expect("rm the symlink");
    std::fs::write(root.join("opt/d2l"), "a file now\n").expect("write");
}

/// Fails unless template `name` shows exactly the tree `umoci unpack` makes of `image` (a tag
/// of `umoci`'s layout).
fn assert_imported_as_umoci_unpacks(d: &TestDaemon, name: &str, umoci: &Umoci, image: &str) {
    let flat = d.dir.join(format!("flat-{name}"));
    flatten_template(d, name, &flat);
    let bundle = umoci.unpack(image);
    let ours = listing(&flat, true);
    let theirs = listing(&bundle.join("rootfs"), true);
    assert_same_listing(
        &format!("template {name} against `umoci unpack` of {image}"),
        &ours,
        &theirs,
    );
    assert!(ours.len() > 30, "{name}: only {} entries", ours.len());
    std::fs::remove_dir_all(&flat).expect("rm the flattened tree");
    std::fs::remove_dir_all(&bundle).expect("rm the bundle");
}

/// The umoci layout of these tests: `base`, `changed` (one layer more), `third` (two more),
/// and `configured` (`changed` with another config, no layer of its own).
fn umoci_layout(d: &TestDaemon) -> Umoci {
    let umoci = Umoci::init(&d.dir.join("umoci-layout"), &d.dir.join("umoci-work"));
    umoci.derive(None, "base", populate_base);
    umoci.derive(Some("base"), "changed", apply_changes);
    umoci.derive(Some("changed"), "third", apply_third);
    umoci.config(
        "changed",
        "configured",
        &["--config.env", "FROM=umoci-config"],
    );
    umoci
}

#[test]
fn umoci_layouts_with_several_tags_import_exactly_as_umoci_unpacks_them() {
    let d = TestDaemon::start();
    let umoci = umoci_layout(&d);
    let layout = umoci.layout.to_str().expect("utf-8").to_owned();
    // The second layer is umoci's: a directory that became a file is written as the file and
    // then a whiteout below it (which mayfly refused before).
    let changed_layers = layer_blobs(&umoci.layout, "changed");
    let names = tar_names(changed_layers.last().expect("a layer"));
    assert!(
        names.iter().any(|n| n.ends_with("opt/d2f/.wh.inner"))
            && names.iter().any(|n| n.ends_with("opt/d2l/.wh.sub")),
        "umoci no longer writes whiteouts below a replaced directory: {names:?}"
    );

    // Several tags, none named: refused, listing them, nothing created.
    let before = catalogue(&d);
    let out = d.mayfly(&["template", "import", "t", &layout]);
    assert_refused(
        &out,
        "a layout of four tags",
        &[
            "holds 4 images",
            "base",
            "changed",
            "third",
            "configured",
            "--tag",
        ],
    );
    let out = d.mayfly(&["template", "import", "t", &format!("{layout}:nope")]);
    assert_refused(
        &out,
        "a tag it does not have",
        &[
            "no image named `nope`",
            "(it has base, changed, third, configured)",
        ],
    );
    assert_nothing_created(&d, &before, "refused tags");

    // Each tag by `DIR:TAG` or --tag: the tree umoci unpacks.
    let out = d.mayfly(&["template", "import", "base", &format!("{layout}:base")]);
    assert_eq!(out.code, 0, "{out}");
    let out = d.mayfly(&["template", "import", "changed", &layout, "--tag", "changed"]);
    assert_eq!(out.code, 0, "{out}");
    let out = d.mayfly(&["template", "import", "third", &format!("{layout}:third")]);
    assert_eq!(out.code, 0, "{out}");
    assert_imported_as_umoci_unpacks(&d, "base", &umoci, "base");
    assert_imported_as_umoci_unpacks(&d, "changed", &umoci, "changed");
    assert_imported_as_umoci_unpacks(&d, "third", &umoci, "third");
    let history = d.ok(&["template", "history", "changed"]);
    assert!(
        history.contains(&format!("imported from {layout} (image changed)")),
        "{history}"
    );
    // Layers are shared by digest between the tags.
    let layers = |name: &str| common::imports::layer_digests(&d, name);
    assert_eq!(layers("changed")[..1], layers("base")[..]);
    assert_eq!(layers("third")[..2], layers("changed")[..]);

    // Over the API: the tag as a field, or after the path; a choice that is needed is a 400
    // listing the tags (not a 200 with an error line), whether progress is followed or not.
    for accept in ["application/json", "application/x-ndjson"] {
        let r = http_with(
            &d.socket,
            "POST",
            "/v1/templates",
            "application/json",
            &[("Accept", accept)],
            json!({"name": "api", "path": layout})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            r.status,
            400,
            "{accept}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let error = &r.json()["error"];
        assert_eq!(error["code"], "invalid_argument", "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("holds 4 images") && message.contains("configured"),
            "{error}"
        );
        assert!(
            error["hint"].as_str().is_some_and(|h| h.contains("--tag")),
            "{error}"
        );
    }
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates",
        "application/json",
        &[],
        json!({"name": "api", "path": layout, "tag": "configured"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let config = &r.json()["versions"][0]["config"];
    assert!(
        config["env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("FROM=umoci-config"))),
        "{config}"
    );
    assert_eq!(layers("api"), layers("changed"));
    // The path form, and both forms at once when they disagree.
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates",
        "application/json",
        &[],
        json!({"name": "api2", "path": format!("{layout}:base"), "tag": "changed"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("two images asked for")),
        "{}",
        r.json()
    );

    // A tag given for a root filesystem is refused, not ignored.
    let rootfs = d.dir.join("plain-rootfs");
    make_rootfs(&rootfs, "plain");
    let before = catalogue(&d);
    let out = d.mayfly(&[
        "template",
        "import",
        "plain",
        rootfs.to_str().expect("utf-8"),
        "--tag",
        "x",
    ]);
    assert_refused(
        &out,
        "a tag for a root filesystem",
        &["not an image", "`x`"],
    );
    assert_nothing_created(&d, &before, "a tag for a root filesystem");
    d.finish();
}

#[test]
fn buildah_images_import_exactly_as_umoci_unpacks_them() {
    let d = TestDaemon::start();
    let layout = d.dir.join("buildah-layout");
    {
        let buildah = Buildah::new(&d.dir.join("buildah"));
        let base = d.dir.join("buildah-base");
        std::fs::create_dir(&base).expect("mkdir");
        populate_base(&base);
        let c = buildah.from("scratch");
        buildah.copy_tree_in(&c, &base);
        buildah.commit_to_layout(&c, "mayfly-test-one", &layout, "one");
        let c = buildah.from("mayfly-test-one");
        buildah.sh(&c, CHANGES);
        buildah.commit_to_layout(&c, "mayfly-test-two", &layout, "two");
    }
    // The recreated directory is an opaque directory of buildah's layer (overlay storage).
    let blobs = layer_blobs(&layout, "two");
    let names = tar_names(blobs.last().expect("a layer"));
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "srv/again/.wh..wh..opq"),
        "buildah wrote no opaque marker: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains(".wh.doomed")),
        "buildah wrote no whiteout: {names:?}"
    );
    // umoci reads buildah's layout as well: it is the reference.
    let umoci = Umoci::from_layout(&layout, &d.dir.join("umoci-work"));
    let layout_s = layout.to_str().expect("utf-8");
    for tag in ["one", "two"] {
        let out = d.mayfly(&["template", "import", tag, &format!("{layout_s}:{tag}")]);
        assert_eq!(out.code, 0, "{tag}: {out}");
        assert_imported_as_umoci_unpacks(&d, tag, &umoci, tag);
    }
    // The opaque directory hides the lower one in a running instance too.
    d.ok(&["launch", "two", "--name", "two", "--", "/bin/sleep", "1000"]);
    assert_eq!(
        d.sh("two", "ls -A /srv/again; cat /opt/d2f"),
        "c\nnow a file\n"
    );
    d.ok(&["rm", "--force", "two"]);
    d.finish();
}

#[test]
fn skopeo_archives_import_exactly_as_umoci_unpacks_their_images() {
    let d = TestDaemon::start();
    let umoci = umoci_layout(&d);
    let oci = |tag: &str| format!("oci:{}", umoci.image(tag));
    let file = |name: &str| d.dir.join(name);
    let path = |name: &str| file(name).to_str().expect("utf-8").to_owned();

    // docker-archive of one image: no tag needed.
    skopeo_copy(
        &oci("changed"),
        &format!("docker-archive:{}:tools:changed", path("changed.tar")),
    );
    let out = d.mayfly(&["template", "import", "dchanged", &path("changed.tar")]);
    assert_eq!(out.code, 0, "{out}");
    assert_imported_as_umoci_unpacks(&d, "dchanged", &umoci, "changed");

    // A save of two images (as `docker save a b` writes it): a choice, by `FILE:NAME:TAG`,
    // --tag, or the tag alone.
    skopeo_copy(
        &oci("base"),
        &format!("docker-archive:{}:tools:base", path("base.tar")),
    );
    merge_docker_archives(
        &[file("changed.tar"), file("base.tar")],
        &file("both.tar"),
        &file("merge-work"),
    );
    let before = catalogue(&d);
    let out = d.mayfly(&["template", "import", "both", &path("both.tar")]);
    assert_refused(
        &out,
        "a save of two images",
        &["holds 2 images", "tools:changed", "tools:base", "--tag"],
    );
    assert_nothing_created(&d, &before, "a save of two images");
    let out = d.mayfly(&[
        "template",
        "import",
        "dbase",
        &format!("{}:tools:base", path("both.tar")),
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_imported_as_umoci_unpacks(&d, "dbase", &umoci, "base");
    let out = d.mayfly(&[
        "template",
        "import",
        "dchanged2",
        &path("both.tar"),
        "--tag",
        "changed",
    ]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        common::imports::layer_digests(&d, "dchanged2"),
        common::imports::layer_digests(&d, "dchanged")
    );
    // Over the API, an archive on the daemon's host: `PATH:NAME:TAG` as well.
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates",
        "application/json",
        &[],
        json!({"name": "dpath", "path": format!("{}:tools:base", path("both.tar"))})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        common::imports::layer_digests(&d, "dpath"),
        common::imports::layer_digests(&d, "dbase")
    );
    // From stdin, the tag is the only way to choose.
    let both = std::fs::read(file("both.tar")).expect("read");
    let out = d.mayfly_stdin(
        &["template", "import", "dstdin", "-", "--tag", "tools:base"],
        &both,
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        common::imports::layer_digests(&d, "dstdin"),
        common::imports::layer_digests(&d, "dbase")
    );

    // oci-archive.
    skopeo_copy(
        &oci("third"),
        &format!("oci-archive:{}:third", path("third.oci.tar")),
    );
    let out = d.mayfly(&["template", "import", "othird", &path("third.oci.tar")]);
    assert_eq!(out.code, 0, "{out}");
    assert_imported_as_umoci_unpacks(&d, "othird", &umoci, "third");

    // The whole umoci layout as one uploaded archive: the tag is a query parameter, and a
    // choice that is needed is a 400 once the archive is read.
    common::tools::tool(
        "tar",
        &[
            "-cf",
            &path("layout.tar"),
            "-C",
            umoci.layout.to_str().expect("utf-8"),
            ".",
        ],
    );
    let layout_tar = std::fs::read(file("layout.tar")).expect("read");
    let before = catalogue(&d);
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates?name=up",
        "application/x-tar",
        &[],
        &layout_tar,
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("holds 4 images")),
        "{}",
        r.json()
    );
    assert_nothing_created(&d, &before, "an uploaded layout without a tag");
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates?name=up&tag=third",
        "application/x-tar",
        &[],
        &layout_tar,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        common::imports::layer_digests(&d, "up"),
        common::imports::layer_digests(&d, "othird")
    );
    let names = template_names(&d);
    for name in ["dchanged", "dbase", "dchanged2", "dstdin", "othird", "up"] {
        assert!(names.contains(&name.to_owned()), "{names:?}");
    }
    d.finish();
}

#[test]
fn damaged_images_are_the_users_error_and_name_the_missing_file() {
    let d = TestDaemon::start();
    let umoci = umoci_layout(&d);
    let layout = umoci.layout.clone();
    let layout_s = layout.to_str().expect("utf-8").to_owned();
    let blobs = layer_blobs(&layout, "changed");
    let missing = blobs.last().expect("a layer").clone();
    let hex = missing
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a blob name")
        .to_owned();
    let rel = format!("blobs/sha256/{hex}");
    std::fs::rename(&missing, d.dir.join("moved-blob")).expect("move the blob away");
    let before = catalogue(&d);

    // From a path: the CLI says which layer, its digest and the file, exit 1.
    let out = d.mayfly(&[
        "template",
        "import",
        "broken",
        &format!("{layout_s}:changed"),
    ]);
    assert_refused(
        &out,
        "a missing layer blob",
        &[
            "layer 2 of 2",
            &format!("sha256:{hex}"),
            &format!("`{rel}` is missing"),
        ],
    );
    // The API: 400 with the same, whether progress is followed or not.
    for accept in ["application/json", "application/x-ndjson"] {
        let r = http_with(
            &d.socket,
            "POST",
            "/v1/templates",
            "application/json",
            &[("Accept", accept)],
            json!({"name": "broken", "path": layout_s, "tag": "changed"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            r.status,
            400,
            "{accept}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains(&rel) && message.contains(&hex),
            "{message}"
        );
    }
    // Uploaded (an archive of the layout): the file is named relative to the image, never
    // by the daemon's staging directory.
    let tar = d.dir.join("broken.tar");
    common::tools::tool(
        "tar",
        &["-cf", tar.to_str().expect("utf-8"), "-C", &layout_s, "."],
    );
    let out = d.mayfly(&[
        "template",
        "import",
        "broken",
        &format!("{}:changed", tar.display()),
    ]);
    assert_refused(
        &out,
        "a missing blob, uploaded",
        &[&format!("`{rel}` is missing")],
    );
    let state = d.state.to_str().expect("utf-8");
    assert!(
        !out.stderr.contains(state),
        "the daemon's path shows: {out}"
    );
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates?name=broken&tag=changed",
        "application/x-tar",
        &[],
        &std::fs::read(&tar).expect("read"),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains(state));
    assert_nothing_created(&d, &before, "a missing blob");

    // A layer blob that is there but damaged (same size, other bytes): 400, naming it.
    std::fs::rename(d.dir.join("moved-blob"), &missing).expect("put the blob back");
    let mut bytes = std::fs::read(&missing).expect("read");
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    std::fs::write(&missing, &bytes).expect("write");
    let r = http_with(
        &d.socket,
        "POST",
        "/v1/templates",
        "application/json",
        &[],
        json!({"name": "broken", "path": format!("{layout_s}:changed")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(&format!("blob `{rel}` does not match")),
        "{message}"
    );
    assert_nothing_created(&d, &before, "a damaged blob");
    d.finish();
}
