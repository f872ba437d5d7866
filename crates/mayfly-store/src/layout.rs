//! Where things live in the state directory.
//!
//! ```text
//! <state>/mayfly.db          the catalogue (SQLite, WAL)
//! <state>/layers/<algo>-<hex>/   immutable layer trees, named by digest
//! <state>/instances/<id>/    upper-<gen>/ (writable layer), work dir, mount point, logs
//! <state>/snapshots/<id>/    frozen copies of writable layers
//! <state>/volumes/<id>/data/ volumes' data (a size-limited volume's directory is a project
//!                            quota's or a loop-mounted disk image's, `<state>/disks/<id>.img`)
//! <state>/tmp/               trees being built; swept at start-up
//! <state>/trash/             trees being deleted in the background; emptied at start-up
//! <state>/run/               sockets and locks of the daemon and its forker
//! ```
//! Everything is on one filesystem, so moving a finished tree into place or into the trash is
//! one `rename`.

use std::path::{Path, PathBuf};

use crate::StoreError;

/// Paths of a state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of state directory `root`.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_owned(),
        }
    }

    /// Creates the directories (mode 0700 for the root: layers may hold setuid files).
    pub fn create(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        for dir in [
            self.root.clone(),
            self.layers(),
            self.instances(),
            self.snapshots(),
            self.tmp(),
            self.trash(),
            self.run(),
            self.channels(),
            self.volumes(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711)).map_err(
            |source| StoreError::Io {
                action: "set permissions of",
                path: self.root.clone(),
                source,
            },
        )?;
        for private in [
            self.tmp(),
            self.trash(),
            self.run(),
            self.layers(),
            self.instances(),
            // A server instance writes there as root (idmapped): a setuid-root file it makes
            // must not be reachable by the host's users. Volumes likewise.
            self.channels(),
            self.volumes(),
        ] {
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| StoreError::Io {
                    action: "set permissions of",
                    path: private.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The catalogue database.
    pub fn db(&self) -> PathBuf {
        self.root.join("mayfly.db")
    }

    /// The directory of layer trees.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The tree of layer `digest` (`blake3:<hex>` → `layers/blake3-<hex>`).
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.layers().join(digest.replace(':', "-"))
    }

    /// The digest a layer directory name stands for, if it is one.
    pub fn digest_of_dir(name: &str) -> Option<String> {
        let (algo, hex) = name.split_once('-')?;
        (!algo.is_empty() && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("{algo}:{hex}"))
    }

    /// The directory of instance directories.
    pub fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// Instance `id`'s directory.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.instances().join(id)
    }

    /// The directory of snapshot trees.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Snapshot `id`'s tree.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots().join(id)
    }

    /// Generation `generation` of instance `id`'s writable layer.
    pub fn writable_dir(&self, id: &str, generation: u64) -> PathBuf {
        self.instance_dir(id).join(format!("upper-{generation}"))
    }

    /// Where trees are built.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where trees wait to be deleted.
    pub fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// Sockets and locks.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Network `name`'s directory (its dnsmasq's configuration, pid file and hosts).
    pub fn net_dir(&self, name: &str) -> PathBuf {
        self.root.join("net").join(name)
    }

    /// Where channels' directories are.
    pub fn channels(&self) -> PathBuf {
        self.root.join("channels")
    }

    /// Channel `name`'s directory (bind-mounted into its server and client).
    pub fn channel_dir(&self, name: &str) -> PathBuf {
        self.channels().join(name)
    }

    /// Where volumes' directories are.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Volume `id`'s directory (where its size limit applies: a quota's project, or the
    /// mount point of its disk image).
    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.volumes().join(id)
    }

    /// Volume `id`'s data (bind-mounted into the instance holding it).
    pub fn volume_data(&self, id: &str) -> PathBuf {
        self.volume_dir(id).join("data")
    }
}
