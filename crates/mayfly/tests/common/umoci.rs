//! Container images made by the real `umoci` at test time: an OCI layout with one tag whose
//! root filesystem a test fills (a static busybox from the host, account files), and whose
//! config (`User`, `Entrypoint`, `Cmd`, …) is set with `umoci config`.

use std::path::{Path, PathBuf};

use super::tools::Umoci;

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
    let work = layout.with_extension("bundle");
    let umoci = Umoci::init(layout, &work);
    umoci.derive(None, tag, fill);
    if !config.is_empty() {
        umoci.config(tag, tag, config);
    }
    std::fs::remove_dir_all(&work).expect("remove the umoci bundles");
    layout.to_owned()
}
