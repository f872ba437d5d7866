//! Container images made at test time by the real tools (umoci, buildah, skopeo), and the
//! full stat listing that an imported template's tree is compared with `umoci unpack`'s by.
//!
//! A missing tool fails the test with what to install (`scripts/install-deps` does): nothing is
//! skipped. Every tool call has a deadline. buildah keeps its storage (overlay driver, as a
//! buildah user's default, so that a directory removed and recreated becomes an opaque
//! directory in the layer) under the test's own directory and removes it, mounts included,
//! when dropped.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

/// How long one call of an image tool may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// Fails the test unless `tool` is on the PATH.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    });
    assert!(
        found,
        "`{tool}` is not installed: these tests build their images with umoci, buildah and \
         skopeo (run scripts/install-deps, or `apt-get install umoci buildah skopeo`)"
    );
}

/// Runs `program args…`, failing the test (with its output) unless it succeeds.
pub fn tool(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run_command(cmd, None, TOOL_TIMEOUT);
    assert!(out.success(), "{program} {}: {out}", args.join(" "));
    out
}

// ---- umoci --------------------------------------------------------------------------------------

/// An OCI image layout driven by umoci, with a scratch directory for its bundles.
#[derive(Debug)]
pub struct Umoci {
    /// The layout.
    pub layout: PathBuf,
    work: PathBuf,
    bundles: std::cell::Cell<u32>,
}

impl Umoci {
    /// `umoci init` at `layout`; bundles go under `work`.
    pub fn init(layout: &Path, work: &Path) -> Umoci {
        require_tool("umoci");
        std::fs::create_dir_all(work).expect("mkdir the umoci work directory");
        tool("umoci", &["init", "--layout", &path_str(layout)]);
        Umoci {
            layout: layout.to_owned(),
            work: work.to_owned(),
            bundles: std::cell::Cell::new(0),
        }
    }

    /// An existing layout (made by another tool), to unpack with umoci.
    pub fn from_layout(layout: &Path, work: &Path) -> Umoci {
        require_tool("umoci");
        std::fs::create_dir_all(work).expect("mkdir the umoci work directory");
        Umoci {
            layout: layout.to_owned(),
            work: work.to_owned(),
            bundles: std::cell::Cell::new(0),
        }
    }

    /// `LAYOUT:TAG`, as umoci and skopeo (`oci:`) name an image.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", path_str(&self.layout))
    }

    fn fresh_bundle(&self) -> PathBuf {
        let n = self.bundles.get();
        self.bundles.set(n + 1);
        self.work.join(format!("bundle-{n}"))
    }

    /// Unpacks image `tag` into a new bundle (as root: owners, devices and xattrs kept) and
    /// returns the bundle; its tree is `<bundle>/rootfs`.
    pub fn unpack(&self, tag: &str) -> PathBuf {
        let bundle = self.fresh_bundle();
        tool(
            "umoci",
            &["unpack", "--image", &self.image(tag), &path_str(&bundle)],
        );
        bundle
    }

    /// Makes image `tag`: the image `from` (an empty new one if `None`), with `change` applied
    /// to its unpacked root filesystem, repacked as one new layer.
    pub fn derive(&self, from: Option<&str>, tag: &str, change: impl FnOnce(&Path)) {
        let from = match from {
            Some(from) => from.to_owned(),
            None => {
                tool("umoci", &["new", "--image", &self.image(tag)]);
                tag.to_owned()
            }
        };
        let bundle = self.unpack(&from);
        change(&bundle.join("rootfs"));
        tool(
            "umoci",
            &["repack", "--image", &self.image(tag), &path_str(&bundle)],
        );
    }

    /// `umoci config --image LAYOUT:FROM --tag TAG ARGS…`: a new tag, no new layer.
    pub fn config(&self, from: &str, tag: &str, args: &[&str]) {
        let image = self.image(from);
        let mut all = vec!["config", "--image", &image, "--tag", tag];
        all.extend_from_slice(args);
        tool("umoci", &all);
    }
}

// ---- buildah ------------------------------------------------------------------------------------

/// buildah with private storage under a test's directory (overlay driver, chroot isolation).
#[derive(Debug)]
pub struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    /// Storage under `dir`.
    pub fn new(dir: &Path) -> Buildah {
        require_tool("buildah");
        Buildah {
            root: dir.join("root"),
            runroot: dir.join("runroot"),
        }
    }

    /// `buildah ARGS…` on this storage; its standard output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        let (root, runroot) = (path_str(&self.root), path_str(&self.runroot));
        let mut all = vec![
            "--root",
            root.as_str(),
            "--runroot",
            runroot.as_str(),
            "--storage-driver",
            "overlay",
        ];
        all.extend_from_slice(args);
        tool("buildah", &all).stdout.trim().to_owned()
    }

    /// A working container from `image` (`scratch` for none); returns its name.
    pub fn from(&self, image: &str) -> String {
        self.run(&["from", "--pull-never", image])
    }

    /// Runs `script` with `/bin/sh -c` inside `container`.
    pub fn sh(&self, container: &str, script: &str) {
        self.run(&[
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
    }

    /// Copies the tree at `src` into `container`'s root (through its mount, keeping owners,
    /// modes, links and xattrs).
    pub fn copy_tree_in(&self, container: &str, src: &Path) {
        let mnt = self.run(&["mount", container]);
        tool("cp", &["-a", &format!("{}/.", path_str(src)), &mnt]);
        self.run(&["umount", container]);
    }

    /// Commits `container` as `image` and pushes it into the OCI layout `layout` as `tag`.
    pub fn commit_to_layout(&self, container: &str, image: &str, layout: &Path, tag: &str) {
        self.run(&["commit", "--format", "oci", container, image]);
        self.run(&["push", image, &format!("oci:{}:{tag}", path_str(layout))]);
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let (root, runroot) = (path_str(&self.root), path_str(&self.runroot));
        for args in [&["rm", "--all"][..], &["rmi", "--all", "--force"][..]] {
            let mut cmd = Command::new("buildah");
            cmd.args([
                "--root",
                &root,
                "--runroot",
                &runroot,
                "--storage-driver",
                "overlay",
            ])
            .args(args);
            let _ = try_run_command(cmd, None, TOOL_TIMEOUT);
        }
        // Whatever the storage left mounted (its own private bind mount of `overlay/`,
        // layers of a container that failed), deepest first.
        let mut points: Vec<String> = mounts_mentioning(&format!("{root}/"))
            .iter()
            .chain(mounts_mentioning(&format!("{runroot}/")).iter())
            .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.runroot);
    }
}

// ---- skopeo -------------------------------------------------------------------------------------

/// `skopeo copy FROM TO` (transports such as `oci:L:tag`, `docker-archive:f.tar:name:tag`,
/// `oci-archive:f.tar:tag`).
pub fn skopeo_copy(from: &str, to: &str) {
    require_tool("skopeo");
    tool("skopeo", &["copy", "--quiet", from, to]);
}

/// Writes one `docker save` archive holding the images of every `docker-archive` tarball of
/// `parts` (as skopeo writes them, one image each): their files side by side, their
/// `manifest.json` entries in one list. That is what `docker save a b` writes, which skopeo
/// cannot.
pub fn merge_docker_archives(parts: &[PathBuf], dest: &Path, work: &Path) {
    let dir = work.join("merged");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut entries = Vec::new();
    for part in parts {
        tool("tar", &["-xf", &path_str(part), "-C", &path_str(&dir)]);
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(dir.join("manifest.json")).expect("read manifest.json"),
        )
        .expect("manifest.json is JSON");
        entries.extend(manifest.as_array().expect("a list").iter().cloned());
    }
    std::fs::write(dir.join("manifest.json"), Value::Array(entries).to_string())
        .expect("write manifest.json");
    tool("tar", &["-cf", &path_str(dest), "-C", &path_str(&dir), "."]);
}

/// The manifest of image `tag` in the OCI layout `layout` (found by its
/// `org.opencontainers.image.ref.name`).
pub fn manifest(layout: &Path, tag: &str) -> Value {
    let index = layout_document(layout, "index.json");
    let manifest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image `{tag}` in {}", layout.display()));
    layout_document(layout, &blob_path(&manifest["digest"]))
}

/// The `config` object of image `tag` in `layout`, read from its blobs (to check that a
/// fixture says what the test thinks it says).
pub fn image_config(layout: &Path, tag: &str) -> Value {
    let manifest = manifest(layout, tag);
    layout_document(layout, &blob_path(&manifest["config"]["digest"]))["config"].clone()
}

/// The layer blobs of image `tag` in the OCI layout `layout`, lowest first.
pub fn layer_blobs(layout: &Path, tag: &str) -> Vec<PathBuf> {
    manifest(layout, tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| layout.join(blob_path(&l["digest"])))
        .collect()
}

/// `blobs/ALGORITHM/HEX` of a descriptor's `digest`.
fn blob_path(digest: &Value) -> String {
    let digest = digest.as_str().expect("a digest");
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// The JSON document at `rel` in `layout`.
fn layout_document(layout: &Path, rel: &str) -> Value {
    let path = layout.join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names of the entries of a tarball (plain or compressed), as `tar -t` lists them.
pub fn tar_names(archive: &Path) -> Vec<String> {
    tool("tar", &["-tf", &path_str(archive)])
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

// ---- stat listings ------------------------------------------------------------------------------

/// One entry of a listing: everything a container could tell about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `file`, `dir`, `link`, `fifo`, `char`, `block`, `socket`.
    pub kind: &'static str,
    /// The twelve permission bits (0 for symlinks).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes (files).
    pub size: u64,
    /// Hash of the content (files).
    pub content: u64,
    /// Link target (symlinks).
    pub target: String,
    /// Device number (devices).
    pub rdev: u64,
    /// Extended attributes but overlayfs's own.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time, when listed with mtimes.
    pub mtime: Option<(i64, i64)>,
    /// The first name of a hard-linked file, for its later names.
    pub link_of: Option<String>,
}

/// The kind of an entry: `file`, `dir`, `link`, `fifo`, `char`, `block`, `socket`.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "link"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

/// Every xattr of `path` (not followed) but `trusted.overlay.*` and `user.overlay.*`.
fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return BTreeMap::new();
    };
    names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| !n.starts_with("trusted.overlay.") && !n.starts_with("user.overlay."))
        .filter_map(|name| {
            let mut value = vec![0u8; 65536];
            let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value).ok()?;
            value.truncate(len);
            Some((name, value))
        })
        .collect()
}

/// The tree under `root`, the root itself as `.`, walked in name order (so that hard-link
/// structure compares equal between equal trees); with mtimes if `mtimes`.
pub fn listing(root: &Path, mtimes: bool) -> BTreeMap<String, Stat> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let at = if dir.is_empty() {
            root.to_owned()
        } else {
            root.join(&dir)
        };
        if dir.is_empty() {
            out.insert(".".to_owned(), stat(&at, ".", mtimes, &mut inodes));
        }
        let mut names: Vec<String> = std::fs::read_dir(&at)
            .unwrap_or_else(|e| panic!("read {}: {e}", at.display()))
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let entry = stat(&root.join(&rel), &rel, mtimes, &mut inodes);
            if entry.kind == "dir" {
                subdirs.push(rel.clone());
            }
            out.insert(rel, entry);
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out
}

fn stat(path: &Path, rel: &str, mtimes: bool, inodes: &mut HashMap<(u64, u64), String>) -> Stat {
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let kind = kind_of(m.file_type());
    let mut s = Stat {
        kind,
        mode: if kind == "link" { 0 } else { m.mode() & 0o7777 },
        uid: m.uid(),
        gid: m.gid(),
        size: 0,
        content: 0,
        target: String::new(),
        rdev: 0,
        xattrs: xattrs_of(path),
        mtime: mtimes.then(|| (m.mtime(), m.mtime_nsec())),
        link_of: None,
    };
    match kind {
        "file" => {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            s.size = m.len();
            s.content = h.finish();
            if m.nlink() > 1 {
                match inodes.get(&(m.dev(), m.ino())) {
                    Some(first) => s.link_of = Some(first.clone()),
                    None => {
                        inodes.insert((m.dev(), m.ino()), rel.to_owned());
                    }
                }
            }
        }
        "link" => {
            s.target = std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        "char" | "block" => s.rdev = m.rdev(),
        _ => {}
    }
    s
}

/// Fails with the first differences between two listings.
pub fn assert_same_listing(
    what: &str,
    ours: &BTreeMap<String, Stat>,
    theirs: &BTreeMap<String, Stat>,
) {
    if ours == theirs {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in ours {
        match theirs.get(k) {
            None => diffs.push(format!("only in mayfly's: {k} {v:?}")),
            Some(w) if w != v => {
                diffs.push(format!("{k}:\n      mayfly {v:?}\n      umoci  {w:?}"))
            }
            _ => {}
        }
    }
    for (k, v) in theirs {
        if !ours.contains_key(k) {
            diffs.push(format!("only in umoci's: {k} {v:?}"));
        }
    }
    let n = diffs.len();
    diffs.truncate(25);
    panic!(
        "{what}: the trees differ in {n} entries:\n    {}",
        diffs.join("\n    ")
    );
}

/// The tree template `name`'s current version shows, flattened from its layers in the state
/// directory into `dest` (as overlayfs stacks them; see `mayfly_image::flatten_layers`).
pub fn flatten_template(d: &TestDaemon, name: &str, dest: &Path) {
    let info = template_info(d, name);
    let current = info["current_version"].as_u64().expect("current_version");
    let layers: Vec<PathBuf> = digests(&version(&info, current))
        .iter()
        .map(|digest| d.state.join("layers").join(layer_dir_name(digest)))
        .collect();
    mayfly_image::flatten_layers(&layers, dest, &mayfly_image::NoProgress)
        .unwrap_or_else(|e| panic!("flatten {name}: {}", mayfly_driver::error_chain(&e)));
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}
