//! TLS clients of the daemon's TCP listener, for the remote-access tests: they run on a
//! thread moved into the TestDaemon's network namespace (so they reach its loopback listener
//! and nothing outside), accept whatever certificate the daemon shows and report its SHA-256
//! fingerprint (the tests compare it with what `mayfly info` says).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use super::http::{HttpResponse, parse_http};
use super::*;

/// The daemon's default TCP listener (inside its namespace).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8443";

/// Runs `f` on a thread that has joined network namespace `netns` (`/run/netns/<netns>`).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    })
}

/// Accepts any certificate and remembers the fingerprint of the last one.
#[derive(Debug)]
struct AnyCert {
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(sha256_hex(end_entity));
        Ok(rustls::client::danger::ServerCertVerified::assertion())
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

/// Lowercase hex SHA-256 (as the daemon prints fingerprints), with `sha256sum`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS connection to the daemon (made on a thread in its namespace; usable from any).
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` over TLS (call inside [`in_netns`]); returns the stream and the
/// fingerprint of the certificate the daemon showed.
pub fn connect(addr: &str) -> Result<(TlsStream, String), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tls_over(tcp)
}

/// A TCP connection to `addr` from local address `from` (e.g. another loopback address:
/// another client as the daemon counts them; call inside [`in_netns`]).
pub fn tcp_from(from: std::net::Ipv4Addr, addr: std::net::SocketAddrV4) -> TcpStream {
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .expect("socket");
    rustix::net::bind(&fd, &std::net::SocketAddrV4::new(from, 0)).expect("bind");
    rustix::net::connect(&fd, &addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    TcpStream::from(fd)
}

/// TLS over an open TCP connection; returns the stream and the certificate's fingerprint.
pub fn tls_over(tcp: TcpStream) -> Result<(TlsStream, String), String> {
    let addr = tcp.peer_addr().map_err(|e| e.to_string())?;
    let verifier = Arc::new(AnyCert {
        seen: Mutex::new(None),
        provider: provider(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(CLI_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    }
    let fp = verifier.seen.lock().unwrap().clone().unwrap_or_default();
    Ok((stream, fp))
}

/// Sends one request (`Connection: close`) with `headers` on `stream`, reads the answer.
pub fn exchange(
    stream: &mut TlsStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:8443\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("write {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read the answer to {method} {path}: {e}")),
    }
    parse_http(&raw).map_err(|e| format!("bad answer to {method} {path}: {e}"))
}

/// One HTTPS request to `addr` inside `netns`.
pub fn https(
    netns: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    in_netns(netns, || {
        let (mut s, _) = connect(addr).unwrap_or_else(|e| panic!("{e}"));
        exchange(&mut s, method, path, headers, body).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// One HTTPS request to the default listener with `Authorization: Bearer SECRET`.
pub fn https_bearer(d: &TestDaemon, secret: &str, method: &str, path: &str) -> HttpResponse {
    let auth = format!("Bearer {secret}");
    https(
        d.netns(),
        DEFAULT_ADDR,
        method,
        path,
        &[("Authorization", &auth)],
        b"",
    )
}

/// Makes API token `name` on `d` (over its unix socket); returns the secret.
pub fn create_token(d: &TestDaemon, name: &str) -> String {
    let created = d.json(&["token", "create", name, "--json"]);
    created["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret in {created}"))
        .to_owned()
}

/// The CLI as a remote client of `d`: run inside the daemon's namespace, with its own list of
/// remotes (`XDG_CONFIG_HOME=<dir>/client`) and no reachable local socket.
pub fn remote_cli(d: &TestDaemon, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", d.netns()))
        .arg("--")
        .arg(bin())
        .args(args)
        .env("XDG_CONFIG_HOME", client_config(d))
        .env("MAYFLY_SOCKET", d.dir.join("no-local-daemon.sock"))
        .env_remove("MAYFLY_TOKEN")
        .env_remove("MAYFLY_REMOTE")
        .env_remove("MAYFLY_STATE_DIR");
    run_command(cmd, stdin, CLI_TIMEOUT)
}

/// The `XDG_CONFIG_HOME` of [`remote_cli`].
pub fn client_config(d: &TestDaemon) -> PathBuf {
    d.dir.join("client")
}

/// Adds `d`'s default listener as remote `name` with a new token `name` (certificate
/// accepted); returns the token's secret.
pub fn add_remote(d: &TestDaemon, name: &str) -> String {
    let secret = create_token(d, name);
    let url = format!("https://{DEFAULT_ADDR}");
    let out = remote_cli(
        d,
        &[
            "remote",
            "add",
            name,
            &url,
            "--token",
            &secret,
            "--accept-certificate",
        ],
        None,
    );
    assert!(out.success(), "{out}");
    secret
}
