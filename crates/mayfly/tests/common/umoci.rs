//! Container images made by the real `umoci` at test time: an OCI layout with one tag whose
//! root filesystem a test fills (a static busybox from the host, account files), and whose
//! config (`User`, `Entrypoint`, `Cmd`, …) is set with `umoci config`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CLI_TIMEOUT, Output, run_command};

/// Runs `umoci` with `args`; fails the test unless it succeeds.
pub fn umoci(args: &[&str]) -> Output {
    let mut cmd = Command::new("umoci");
    cmd.args(args);
    let out = run_command(cmd, None, CLI_TIMEOUT);
    assert!(out.success(), "umoci {}: {out}", args.join(" "));
    out
}

/// The busybox applets the images of the tests link (all run the host's static busybox).
const APPLETS: &[&str] = &[
    "sh", "id", "cat", "echo", "grep", "sleep", "env", "true", "ls", "sed",
];

/// Accounts of the test images: root, `nobody` (65534, home `/home/nobody`) and `app` (1000,
/// home `/srv/app`); `nobody` and `app` are members of `staff` (50).
pub const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home/nobody:/bin/sh
app:x:1000:1000:app:/srv/app:/bin/sh
";

/// See [`PASSWD`].
pub const GROUP: &str = "\
root:x:0:
staff:x:50:nobody,app
app:x:1000:
nogroup:x:65534:
";

/// Fills `root` with a minimal system: `/bin/busybox` (the host's, which is static) and
/// links for [`APPLETS`], `/etc/passwd` and `/etc/group` ([`PASSWD`], [`GROUP`]), and the
/// usual top-level directories.
pub fn busybox_rootfs(root: &Path) {
    for dir in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/nobody",
        "srv/app",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("create a directory of the rootfs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copy /bin/busybox (install busybox-static)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .expect("link an applet");
    }
    std::fs::write(root.join("etc/passwd"), PASSWD).expect("write /etc/passwd");
    std::fs::write(root.join("etc/group"), GROUP).expect("write /etc/group");
}

/// Builds an OCI image layout at `layout` with one image, tagged `tag`: a layer made by
/// `umoci repack` from the root filesystem that `fill` writes, then `config` passed to
/// `umoci config` (e.g. `["--config.user", "65534:65534"]`; a repeated
/// `--config.entrypoint` or `--config.cmd` adds one argument each). Returns `layout`.
pub fn build_image(layout: &Path, tag: &str, fill: impl FnOnce(&Path), config: &[&str]) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    let bundle = layout.with_extension("bundle");
    umoci(&["init", "--layout", &layout.display().to_string()]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, &bundle.display().to_string()]);
    fill(&bundle.join("rootfs"));
    umoci(&["repack", "--image", &image, &bundle.display().to_string()]);
    if !config.is_empty() {
        let mut args = vec!["config", "--image", &image];
        args.extend_from_slice(config);
        umoci(&args);
    }
    std::fs::remove_dir_all(&bundle).expect("remove the umoci bundle");
    layout.to_owned()
}

/// The `config` object of the image tagged `tag` in `layout`, read from its blobs (to check
/// that a fixture says what the test thinks it says).
pub fn image_config(layout: &Path, tag: &str) -> serde_json::Value {
    let read = |rel: &str| -> serde_json::Value {
        let path = layout.join(rel);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("a digest");
        read(&format!("blobs/{}", digest.replacen(':', "/", 1)))
    };
    let index = read("index.json");
    let manifest = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image tagged {tag} in {index}"));
    let manifest = blob(&manifest["digest"]);
    blob(&manifest["config"]["digest"])["config"].clone()
}
