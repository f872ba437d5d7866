use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs as rfs;

use super::*;
use crate::fixtures::{Kind, Spec, materialize, spec, with_xattrs, xattrs_of};
use crate::{CopyOptions, NoProgress, XattrPolicy, copy_tree, flatten_layers, layer_conflicts};

const OPAQUE_Y: &[(&str, &[u8])] = &[("trusted.overlay.opaque", b"y")];
const T: (i64, u32) = (1_600_000_000, 0);

const fn dir(path: &'static str) -> Spec {
    spec(path, Kind::Dir, 0o755, T)
}

const fn opaque(path: &'static str) -> Spec {
    with_xattrs(dir(path), OPAQUE_Y)
}

const fn file(path: &'static str) -> Spec {
    spec(path, Kind::File(b"x"), 0o644, T)
}

const fn whiteout(path: &'static str) -> Spec {
    spec(path, Kind::Char(0, 0), 0, T)
}

/// The relative paths of the directories below `root` that carry an opaque marker.
fn opaque_dirs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                if xattrs_of(&e.path()).contains_key("trusted.overlay.opaque") {
                    let rel = e.path().strip_prefix(root).unwrap().to_owned();
                    out.insert(rel.to_str().unwrap().to_owned());
                }
                stack.push(e.path());
            }
        }
    }
    out
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

fn tree(parent: &Path, name: &str, specs: &[Spec]) -> PathBuf {
    let root = parent.join(name);
    fs::create_dir(&root).unwrap();
    materialize(&root, specs);
    root
}

#[test]
fn markers_are_kept_only_over_a_visible_lower_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let bottom = tree(
        tmp.path(),
        "bottom",
        &[
            dir(""),
            dir("keep"),
            dir("whited"),
            file("overfile"),
            dir("hidden"),
            dir("hidden/x"),
            dir("nested"),
            dir("nested/a"),
            dir("nested/a/b"),
            dir("under"),
            dir("under/deep"),
            dir("target"),
            spec("sym", Kind::Symlink("target"), 0o777, T),
            dir("below-opaque"),
            dir("below-opaque/x"),
        ],
    );
    let top = tree(
        tmp.path(),
        "top",
        &[
            dir(""),
            whiteout("whited"),
            opaque("hidden"),
            dir("only-top"),
            dir("only-top/x"),
            // An opaque directory of a lower layer shows itself (and hides what is below).
            opaque("below-opaque"),
        ],
    );
    let upper = tree(
        tmp.path(),
        "upper",
        &[
            dir(""),
            opaque("new"),
            opaque("new/inner"),
            opaque("keep"),
            opaque("whited"),
            opaque("overfile"),
            dir("hidden"),
            opaque("hidden/x"),
            dir("nested"),
            dir("nested/a"),
            opaque("nested/a/b"),
            dir("nested/a/fresh"),
            opaque("under"),
            opaque("under/deep"),
            opaque("sym"),
            dir("only-top"),
            opaque("only-top/x"),
            opaque("below-opaque"),
            with_xattrs(dir("not-y"), &[("trusted.overlay.opaque", b"x")]),
            with_xattrs(
                dir("other-xattrs"),
                &[("trusted.overlay.opaque", b"y"), ("user.keep", b"1")],
            ),
        ],
    );
    let report = drop_needless_opaque(&upper, &[bottom, top]).unwrap();
    let kept = set(&["keep", "nested/a/b", "under", "only-top/x", "below-opaque"]);
    assert_eq!(opaque_dirs(&upper), kept);
    assert_eq!(
        report,
        OpaqueReport {
            kept: 5,
            dropped: 9
        }
    );
    let other = xattrs_of(&upper.join("other-xattrs"));
    assert_eq!(
        other.keys().collect::<Vec<_>>(),
        vec!["user.keep"],
        "only the marker goes"
    );
    let m = fs::symlink_metadata(upper.join("new")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&m),
        T.0,
        "the mtime stays"
    );

    // Without lower layers, no marker is needed; a second pass finds nothing more to do.
    let report = drop_needless_opaque(&upper, &[]).unwrap();
    assert_eq!(report.kept, 0);
    assert!(opaque_dirs(&upper).is_empty());
    assert_eq!(
        drop_needless_opaque(&upper, &[]).unwrap(),
        OpaqueReport::default()
    );
}

// ---- with a real overlayfs ---------------------------------------------------------------------

/// A read-write overlay of `lowers` (lowest first) under `upper`, mounted as mayfly mounts an
/// instance's root (no redirects, no index, no metacopy) and detached when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(at: &Path, lowers: &[&Path], upper: &Path, work: &Path) -> Self {
        use rustix::mount::{
            FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
            fsconfig_set_string, fsmount, fsopen, move_mount,
        };
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
        for layer in lowers.iter().rev() {
            fsconfig_set_string(&fs, "lowerdir+", *layer).unwrap();
        }
        fsconfig_set_string(&fs, "upperdir", upper).unwrap();
        fsconfig_set_string(&fs, "workdir", work).unwrap();
        for (k, v) in [
            ("redirect_dir", "off"),
            ("index", "off"),
            ("metacopy", "off"),
        ] {
            fsconfig_set_string(&fs, k, v).unwrap();
        }
        fsconfig_create(&fs).unwrap();
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).unwrap();
        move_mount(
            &mnt,
            "",
            rfs::CWD,
            at,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .unwrap();
        Mounted(at.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
}

/// Runs `change` in a read-write overlay over `lowers`, and returns the upper directory it left
/// (named `name`, under `tmp`).
fn changed_by(tmp: &Path, name: &str, lowers: &[&Path], change: impl FnOnce(&Path)) -> PathBuf {
    let upper = tmp.join(name);
    let work = tmp.join(format!("{name}.work"));
    let at = tmp.join(format!("{name}.mnt"));
    for d in [&upper, &work, &at] {
        fs::create_dir(d).unwrap();
    }
    {
        let _m = Mounted::new(&at, lowers, &upper, &work);
        change(&at);
    }
    fs::remove_dir_all(&work).unwrap();
    upper
}

fn digest_of_stack(tmp: &Path, name: &str, layers: &[PathBuf]) -> String {
    let out = tmp.join(name);
    flatten_layers(layers, &out, &NoProgress).unwrap();
    crate::tree_digest(&out).unwrap().as_str().to_owned()
}

fn copy_of(src: &Path, dest: &Path) -> PathBuf {
    let options = CopyOptions {
        xattrs: XattrPolicy::All,
        one_file_system: false,
    };
    copy_tree(src, dest, options, &NoProgress).unwrap();
    dest.to_owned()
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .collect()
}

/// What a package install does to an overlay (new directories in merged ones, a directory
/// renamed into place, a directory deleted and made again, a file replaced by a directory),
/// with the kernel's own markers: only the recreated directory keeps its marker, the stack
/// shows the same tree, and two such layers stack without hiding each other.
#[test]
fn a_real_overlay_upper_keeps_only_the_markers_that_replace_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = tree(
        t,
        "base",
        &[
            dir(""),
            dir("usr"),
            dir("usr/share"),
            dir("usr/share/doc"),
            dir("usr/share/doc/base-files"),
            file("usr/share/doc/base-files/copyright"),
            dir("usr/share/man"),
            dir("etc"),
            dir("etc/keep"),
            file("etc/keep/old"),
            dir("opt"),
            file("opt/was-file"),
        ],
    );
    let install = |root: &Path, page: &str| {
        // A directory new to the stack, made aside and renamed into one the base has.
        let aside = root.join("usr/share/man/man3.new");
        fs::create_dir(&aside).unwrap();
        fs::write(aside.join(page), page).unwrap();
        fs::rename(&aside, root.join("usr/share/man/man3")).unwrap();
    };
    let app = changed_by(t, "app", &[&base], |root| {
        install(root, "a.3");
        fs::create_dir(root.join("usr/share/doc/pkg.dpkg-new")).unwrap();
        fs::write(root.join("usr/share/doc/pkg.dpkg-new/copyright"), "c").unwrap();
        fs::rename(
            root.join("usr/share/doc/pkg.dpkg-new"),
            root.join("usr/share/doc/pkg"),
        )
        .unwrap();
        fs::remove_file(root.join("etc/keep/old")).unwrap();
        fs::remove_dir(root.join("etc/keep")).unwrap();
        fs::create_dir(root.join("etc/keep")).unwrap();
        fs::write(root.join("etc/keep/new"), "n").unwrap();
        fs::remove_file(root.join("opt/was-file")).unwrap();
        fs::create_dir(root.join("opt/was-file")).unwrap();
        fs::create_dir_all(root.join("srv/www")).unwrap();
    });
    let before = opaque_dirs(&app);
    for marked in [
        "usr/share/man/man3",
        "usr/share/doc/pkg",
        "etc/keep",
        "opt/was-file",
    ] {
        assert!(
            before.contains(marked),
            "overlayfs marks {marked} opaque (the behaviour this module is about): {before:?}"
        );
    }
    let original = copy_of(&app, &t.join("app-original"));

    let report = drop_needless_opaque(&app, std::slice::from_ref(&base)).unwrap();
    assert_eq!(
        opaque_dirs(&app),
        set(&["etc/keep"]),
        "only the directory that really replaces the base's keeps its marker"
    );
    assert_eq!(report.kept, 1);
    assert_eq!(report.dropped, before.len() as u64 - 1);
    assert_eq!(
        digest_of_stack(t, "flat-original", &[base.clone(), original.clone()]),
        digest_of_stack(t, "flat-cleaned", &[base.clone(), app.clone()]),
        "the stack it was built on shows exactly the same tree"
    );
    let merged = t.join("flat-cleaned");
    assert_eq!(names_in(&merged.join("etc/keep")), set(&["new"]));
    assert!(merged.join("opt/was-file").is_dir());

    // A second application that adds to the same new directory.
    let other = changed_by(t, "other", &[&base], |root| install(root, "b.3"));
    let other_original = copy_of(&other, &t.join("other-original"));
    drop_needless_opaque(&other, std::slice::from_ref(&base)).unwrap();
    assert!(opaque_dirs(&other).is_empty());

    assert_eq!(
        layer_conflicts(&other_original, &original, &[]).unwrap(),
        vec![
            "usr/share/man/man3/a.3".to_owned(),
            "usr/share/man/man3/b.3".to_owned()
        ],
        "with overlayfs's markers, the two applications conflict"
    );
    assert!(
        layer_conflicts(&other, &app, &[]).unwrap().is_empty(),
        "without the needless markers they do not"
    );
    let stacked = t.join("stacked");
    flatten_layers(
        &[base.clone(), other.clone(), app.clone()],
        &stacked,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        names_in(&stacked.join("usr/share/man/man3")),
        set(&["a.3", "b.3"]),
        "stacked, both applications' files show"
    );
    let hidden = t.join("stacked-original");
    flatten_layers(&[base, other_original, original], &hidden, &NoProgress).unwrap();
    assert_eq!(
        names_in(&hidden.join("usr/share/man/man3")),
        set(&["a.3"]),
        "(the defect: the upper application's marker hid the other's file)"
    );
}
