//! Remote daemons: the CLI's list of them (`mayfly remote add|list|rm`), kept in
//! `$XDG_CONFIG_HOME/mayfly/remotes.json` (else `~/.config/mayfly/remotes.json`; 0600 in a
//! 0700 directory: it holds tokens), and the TLS client that talks to one.
//!
//! Trust on first use, like Incus: `remote add` shows the SHA-256 fingerprint of the
//! certificate the daemon presents and pins it once accepted; every later connection must see
//! that very certificate (no certificate authority is involved), and a changed one is refused
//! with both fingerprints.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The port of a URL without one (the daemon's default listener).
pub const DEFAULT_PORT: u16 = 8443;

/// One remote daemon as configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteConfig {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The pinned certificate's SHA-256 (lowercase hex).
    pub fingerprint: String,
    /// The bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The file of remotes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Remotes {
    /// By name.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteConfig>,
}

/// Where the remotes are kept.
pub fn config_path() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(
                    "neither XDG_CONFIG_HOME nor HOME is set: cannot find the list of remotes"
                        .to_owned(),
                );
            }
        },
    };
    Ok(base.join("mayfly").join("remotes.json"))
}

impl Remotes {
    /// Reads the list (empty when the file does not exist).
    pub fn load() -> Result<Self, String> {
        let path = config_path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not a valid list of remotes: {e} (fix it, or remove it and add the remotes again)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the list (0600, atomically).
    pub fn save(&self) -> Result<(), String> {
        let path = config_path()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let data = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
    }

    /// Remote `name`, or what to do.
    pub fn get(&self, name: &str) -> Result<&RemoteConfig, String> {
        self.remotes.get(name).ok_or_else(|| {
            format!(
                "remote `{name}` is not configured\n  hint: add it with `mayfly remote add {name} https://HOST:{DEFAULT_PORT} --token SECRET` (see `mayfly remote list`)"
            )
        })
    }
}

/// A remote's URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as the URL names it (brackets stripped from IPv6), for TLS.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/]` (or `HOST[:PORT]`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid remote URL `{url}`: {why} (give https://HOST:PORT, e.g. https://lab.example:{DEFAULT_PORT})"
            )
        };
        let rest = match url.split_once("://") {
            Some(("https", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "`{scheme}://` is not served: the daemon's TCP listener only speaks TLS"
                )));
            }
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(bad("no host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only a host and a port are taken (no path or user)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after `]`")),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p)),
                Some(_) => return Err(bad("put an IPv6 address in brackets: [::1]")),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("bad port `{p}`")))?,
            None => DEFAULT_PORT,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint { host, port })
    }

    /// `HOST:PORT` to connect to (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The canonical URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }
}

/// The SHA-256 fingerprint of a certificate as the daemon prints it (lowercase hex).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fingerprint as typed (any case, with or without `:` separators), normalised.
pub fn normalize_fingerprint(fp: &str) -> String {
    fp.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// rustls with the *ring* provider (deprecated in rustls 0.23.48 for lacking post-quantum key
/// exchange; the project keeps ring rather than aws-lc).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the pinned certificate (or, with no pin, any one: `remote add`'s first
/// look) and remembers the fingerprint of what the server showed.
#[derive(Debug)]
pub struct Pin {
    pinned: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Pin {
    /// The fingerprint the server showed at the last handshake.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pinned fingerprint.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }
}

impl rustls::client::danger::ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp.clone());
        match &self.pinned {
            Some(p) if *p != fp => Err(rustls::Error::General(
                "the server's certificate is not the pinned one".to_owned(),
            )),
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A remote as the client uses it.
#[derive(Debug)]
pub struct Remote {
    /// Its name (`None`: being added).
    pub name: Option<String>,
    /// Where.
    pub endpoint: Endpoint,
    /// The bearer token.
    pub token: Option<String>,
    /// The certificate check.
    pub pin: Arc<Pin>,
    /// TLS set-up with [`Self::pin`].
    pub tls: Arc<rustls::ClientConfig>,
}

impl Remote {
    /// A remote at `endpoint` whose certificate must be `pinned` (`None`: any, recorded).
    pub fn new(
        name: Option<String>,
        endpoint: Endpoint,
        token: Option<String>,
        pinned: Option<String>,
    ) -> Result<Self, String> {
        let pin = Arc::new(Pin {
            pinned: pinned.map(|p| normalize_fingerprint(&p)),
            seen: Mutex::new(None),
            provider: provider(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(pin.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Remote {
            name,
            endpoint,
            token,
            pin,
            tls: Arc::new(tls),
        })
    }

    /// Remote `name` of the configuration.
    pub fn configured(name: &str) -> Result<Self, String> {
        let remotes = Remotes::load()?;
        let config = remotes.get(name)?;
        let endpoint = Endpoint::parse(&config.url)?;
        Remote::new(
            Some(name.to_owned()),
            endpoint,
            config.token.clone(),
            Some(config.fingerprint.clone()),
        )
    }

    /// How to name it in messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("remote `{n}` ({})", self.endpoint.url()),
            None => self.endpoint.url(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Endpoint, normalize_fingerprint};

    #[test]
    fn urls_are_taken_apart_or_refused_with_the_form_to_use() {
        let e = Endpoint::parse("https://lab.example:9443/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("lab.example", 9443));
        assert_eq!(e.url(), "https://lab.example:9443");
        let e = Endpoint::parse("lab.example").unwrap();
        assert_eq!(e.port, super::DEFAULT_PORT);
        let e = Endpoint::parse("https://[::1]:8444").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8444));
        assert_eq!(e.authority(), "[::1]:8444");
        for (bad, says) in [
            ("http://lab:8443", "only speaks TLS"),
            ("https://lab:8443/v1", "no path"),
            ("https://user@lab", "no path or user"),
            ("https://lab:0", "bad port"),
            ("https://lab:http", "bad port"),
            ("https://::1:8443", "brackets"),
            ("https://", "no host"),
            ("https://[::1", "unclosed"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("https://HOST:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn fingerprints_compare_in_any_case_with_or_without_colons() {
        assert_eq!(normalize_fingerprint("AB:cd:0F"), "abcd0f");
        assert_eq!(normalize_fingerprint("abcd0f"), "abcd0f");
    }
}
