//! What a template never keeps from its build: downloaded packages, package lists, apt's
//! caches, the logs of the build, and the build host's name and resolver. This is what Debian's
//! own container images leave out (debuerreotype empties `/var/cache/apt` and
//! `/var/lib/apt/lists` and removes `dpkg.log`, `bootstrap.log`, `alternatives.log`, apt's
//! `history.log`/`term.log` and ldconfig's `aux-cache`). apt's sources (`/etc/apt/sources.list`,
//! `sources.list.d`) stay, and so do the directories the package tools work in (apt's
//! `lists/partial` and `archives/partial`): only what is inside them goes, so a layer never
//! deletes (whites out) a directory of the template below it. The list is in
//! docs/architecture.md ("Clean templates").
//!
//! Two places apply it: the host cleans a debootstrapped root ([`OS_TEMPLATE`]), and a build
//! container (applications, patches) runs [`BUILD_LAYER`] as a shell script after the build's
//! own script succeeded, inside the container, so that a file of the template below is deleted
//! (whited out) exactly as if the script had done it. Inside a build container apt's archive
//! directory is the host's package cache (a mount, kept across builds on purpose), so it is not
//! touched there; `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are mayfly's own mounts
//! there (`etc_files`) and never reach the layer.

/// Paths cleaned in a tree: directories whose contents go (every non-directory at any depth;
/// the directories stay), and single files that go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clean {
    /// Relative directory paths emptied.
    pub emptied: &'static [&'static str],
    /// Relative file paths removed.
    pub removed: &'static [&'static str],
}

/// A root made by debootstrap.
pub(crate) const OS_TEMPLATE: Clean = Clean {
    emptied: &["var/cache/apt", "var/lib/apt/lists", "var/log/apt"],
    removed: &[
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
        "var/cache/ldconfig/aux-cache",
        // debootstrap copies the build host's.
        "etc/hostname",
        "etc/resolv.conf",
    ],
};

/// What a build container's script leaves (its archive directory is the host's cache).
pub(crate) const BUILD_LAYER: Clean = Clean {
    emptied: &["var/lib/apt/lists", "var/log/apt"],
    removed: &[
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
        "var/cache/ldconfig/aux-cache",
    ],
};

impl Clean {
    /// The same, as a POSIX shell script for inside a container (only `find` and `rm`,
    /// which busybox has too; a path that is missing or a symlink is left alone).
    pub(crate) fn script(&self) -> String {
        let mut s = String::new();
        for dir in self.emptied {
            s.push_str(&format!(
                "if [ -d /{dir} ] && [ ! -L /{dir} ]; then find /{dir} -xdev ! -type d -exec rm -f {{}} \\; ; fi\n"
            ));
        }
        for file in self.removed {
            s.push_str(&format!(
                "if [ -e /{file} ] && [ ! -d /{file} ]; then rm -f /{file}; fi\n"
            ));
        }
        s
    }
}

/// The arguments of a build container's init: `script` in a shell of its own (its `exit` or
/// `set -e` end only it), then, if it succeeded, [`BUILD_LAYER`]'s clean-up (whose failure
/// fails the build, with the cause in its output).
pub(crate) fn build_command(script: String) -> Vec<String> {
    let wrapper = format!(
        "/bin/sh -c \"$1\" || exit\nset -e\n{}",
        BUILD_LAYER.script()
    );
    vec![
        "/bin/sh".into(),
        "-c".into(),
        wrapper,
        "mayfly-build".into(),
        script,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs and caches that no template keeps.
    const BUILD_LOGS: &[&str] = &[
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
        "var/cache/ldconfig/aux-cache",
    ];

    #[test]
    fn build_logs_are_cleaned_in_both_places() {
        for f in BUILD_LOGS {
            assert!(OS_TEMPLATE.removed.contains(f), "{f}");
            assert!(BUILD_LAYER.removed.contains(f), "{f}");
        }
        assert!(
            !BUILD_LAYER
                .emptied
                .iter()
                .any(|d| "var/cache/apt/archives".starts_with(d)),
            "the host's package cache is never emptied from a build container"
        );
    }

    /// The script run by a real shell over a scratch root (paths made relative to it).
    #[test]
    fn the_script_empties_directories_and_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("var/lib/apt/lists/partial")).unwrap();
        std::fs::create_dir_all(root.join("var/log/apt")).unwrap();
        std::fs::create_dir_all(root.join("var/cache/apt/archives/partial")).unwrap();
        for f in [
            "var/lib/apt/lists/x_Packages",
            "var/lib/apt/lists/partial/y",
            "var/log/apt/history.log",
            "var/log/dpkg.log",
            "var/log/other.log",
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/archives/kept.deb",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let script = BUILD_LAYER
            .script()
            .replace(" /", &format!(" {}/", root.display()));
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        let left = |p: &str| root.join(p).exists();
        assert!(left("var/lib/apt/lists/partial") && left("var/log/apt"));
        assert!(!left("var/lib/apt/lists/x_Packages") && !left("var/lib/apt/lists/partial/y"));
        assert!(!left("var/log/apt/history.log") && !left("var/log/dpkg.log"));
        assert!(!left("var/cache/apt/pkgcache.bin"));
        assert!(left("var/log/other.log") && left("var/cache/apt/archives/kept.deb"));
    }
}
