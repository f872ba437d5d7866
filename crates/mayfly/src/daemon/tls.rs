//! The TCP listener's TLS identity: a self-signed certificate made at the first start that
//! needs one (rcgen), kept under `<state>/tls/` (`cert.pem`, `key.pem` 0600, the directory
//! 0700) and reused by every later start, so that clients can pin its SHA-256 fingerprint
//! (trust on first use, like Incus). rustls serves it with the ring provider.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The daemon's TLS server set-up.
#[derive(Clone)]
pub(crate) struct Tls {
    /// What the acceptor serves with.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate (lowercase hex), what clients pin.
    pub fingerprint: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// rustls with the *ring* provider (the project's choice: no aws-lc, no C toolchain beyond
/// ring's). rustls 0.23.48 deprecates it for lacking post-quantum key exchange.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate's fingerprint as clients show and pin it: SHA-256 of its DER, lowercase hex.
pub(crate) fn fingerprint(cert: &[u8]) -> String {
    mayfly_engine::tokens::sha256_hex(cert)
}

fn paths(state_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"), dir)
}

/// Writes `data` to `path` with `mode`, atomically (a temporary file renamed into place).
fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Makes a self-signed certificate and its key under `dir`.
fn generate(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !host.is_empty() && host != "localhost" {
        names.push(host);
    }
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mayfly daemon");
    let key = rcgen::KeyPair::generate().context("cannot generate the TLS key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot make the TLS certificate")?;
    // The key first: a certificate without its key would be useless at the next start.
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(
        certificate = %cert_path.display(),
        fingerprint = %fingerprint(cert.der()),
        "made the daemon's TLS certificate"
    );
    Ok(())
}

/// Loads the daemon's certificate from `<state>/tls/`, making it first if there is none.
pub(crate) fn load_or_create(state_dir: &Path) -> anyhow::Result<Tls> {
    let (cert_path, key_path, dir) = paths(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions of {}", dir.display()))?;
    if !key_path.exists() || !cert_path.exists() {
        generate(&cert_path, &key_path)?;
    }
    let hint = || {
        format!(
            "remove {} to make a new certificate (remotes that pinned the old one must be added again)",
            dir.display()
        )
    };
    let cert = CertificateDer::from_pem_file(&cert_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}; {}", cert_path.display(), hint()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}; {}", key_path.display(), hint()))?;
    let fingerprint = fingerprint(&cert);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| {
            anyhow::anyhow!("the TLS certificate does not fit its key: {e}; {}", hint())
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
    })
}
