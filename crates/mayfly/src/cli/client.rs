//! The HTTP client of the CLI: one connection per request to the daemon's unix socket, or
//! to a remote daemon over TLS with its bearer token (hyper), JSON in and out, errors decoded
//! from the API's error body, and upgrades for interactive streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mayfly_api::text::printable;
use mayfly_api::{ApiError, ErrorBody};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::remote::Remote;

/// Connecting to a remote (TCP and the TLS handshake) must end within this long.
const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A request body.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The daemon's socket cannot be reached.
    Connect(PathBuf, std::io::Error),
    /// The daemon answered with an error.
    Api(ApiError),
    /// The connection to the daemon was lost during the exchange (the daemon stopped or
    /// crashed): this says what may have happened and how to find out.
    Lost(String),
    /// The exchange broke (connection lost, garbled answer).
    Protocol(String),
    /// A remote daemon cannot be reached (TCP or TLS failed).
    Unreachable(String),
    /// A remote daemon showed another certificate than the pinned one.
    Certificate(String),
    /// The list of remotes, or a remote's name, is wrong.
    Config(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(socket, e) => write!(
                f,
                "cannot reach the mayfly daemon at {}: {e}\n  hint: start it with `mayfly daemon` (as root), or point --socket / MAYFLY_SOCKET at its socket",
                socket.display()
            ),
            // Whatever the daemon relays (an archive's names, a decoder's complaint) is
            // printed without its control characters, even from a daemon that let them through.
            ClientError::Api(e) => {
                write!(f, "{}", printable(&e.message))?;
                if let Some(hint) = &e.hint {
                    write!(f, "\n  hint: {}", printable(hint))?;
                }
                Ok(())
            }
            ClientError::Lost(m)
            | ClientError::Protocol(m)
            | ClientError::Unreachable(m)
            | ClientError::Certificate(m)
            | ClientError::Config(m) => write!(f, "{}", printable(m)),
        }
    }
}

impl ClientError {
    /// The CLI exit code for this error: 3 when the daemon cannot be reached or was lost,
    /// 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Connect(..) | ClientError::Lost(_) | ClientError::Unreachable(_) => 3,
            _ => 1,
        }
    }
}

fn protocol(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!("{what}: {e}"))
}

/// The connection broke while `what`.
fn lost(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Lost(format!(
        "lost the connection to the mayfly daemon ({what}: {e})\n  hint: check that it runs (`mayfly info`); the request may or may not have been carried out"
    ))
}

/// The HTTP method of an action of the API table.
pub fn method(action: mayfly_api::Action) -> Method {
    match action.method() {
        mayfly_api::actions::Method::Get => Method::GET,
        mayfly_api::actions::Method::Post => Method::POST,
        mayfly_api::actions::Method::Patch => Method::PATCH,
        mayfly_api::actions::Method::Delete => Method::DELETE,
    }
}

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A client of the daemon at one socket, or of a remote daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    remote: Option<Arc<Remote>>,
}

/// Sends `req` on the fresh connection `io`.
async fn exchange<I>(io: I, req: Request<ReqBody>) -> Result<Response<Incoming>, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| lost("HTTP handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| lost("waiting for the answer", e))
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            remote: None,
        }
    }

    /// A client of `remote` (over TLS, with its token).
    pub fn for_remote(socket: PathBuf, remote: Remote) -> Self {
        Client {
            socket,
            remote: Some(Arc::new(remote)),
        }
    }

    /// The client the command line asks for: the daemon at `remote` (a name configured by
    /// `mayfly remote add`) when given, else the one on `socket`.
    pub fn for_command_line(socket: PathBuf, remote: Option<&str>) -> Result<Self, ClientError> {
        match remote {
            None => Ok(Client::new(socket)),
            Some(r) => Ok(Client::for_remote(
                socket,
                Remote::configured(r).map_err(ClientError::Config)?,
            )),
        }
    }

    /// The socket (of the local daemon, even when this client talks to a remote).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The remote this client talks to, if it is not the local daemon.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }

    /// Connects to `remote` over TLS: a certificate other than the pinned one is refused
    /// with both fingerprints and what to do.
    pub async fn tls_connect(
        remote: &Remote,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let label = remote.label();
        let authority = remote.endpoint.authority();
        let unreachable = |e: &dyn std::fmt::Display| {
            ClientError::Unreachable(format!(
                "cannot reach {label}: {e}\n  hint: check the address, and that the daemon listens there (`mayfly daemon --listen ADDR:PORT`)"
            ))
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|e| unreachable(&e))?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(remote.endpoint.host.clone())
                .map_err(|e| unreachable(&e))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&remote.tls));
            connector.connect(name, tcp).await.map_err(|e| {
                match (remote.pin.pinned(), remote.pin.seen()) {
                    (Some(pinned), Some(seen)) if pinned != seen => {
                        let name = remote.name.as_deref().unwrap_or("NAME");
                        ClientError::Certificate(format!(
                            "the certificate of {label} is not the one trusted when it was added\n  pinned fingerprint (SHA-256): {pinned}\n  presented now:                {seen}\n  hint: someone may be intercepting the connection; if the daemon's certificate was replaced on purpose (compare with `mayfly info` on its host), run `mayfly remote rm {name}` and `mayfly remote add {name} {}` again",
                            remote.endpoint.url()
                        ))
                    }
                    _ => ClientError::Unreachable(format!(
                        "TLS handshake with {label} failed: {e}\n  hint: is it a mayfly daemon's TCP listener (`mayfly daemon --listen`)?"
                    )),
                }
            })
        };
        match tokio::time::timeout(REMOTE_CONNECT_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(&format!(
                "no connection within {} s",
                REMOTE_CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sends `req` on a fresh connection.
    pub async fn send(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, ClientError> {
        let Some(remote) = &self.remote else {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::Connect(self.socket.clone(), e))?;
            return exchange(stream, req).await;
        };
        let headers = req.headers_mut();
        if let Ok(host) = hyper::header::HeaderValue::from_str(&remote.endpoint.authority()) {
            headers.insert(hyper::header::HOST, host);
        }
        if let Some(token) = &remote.token {
            let value = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    ClientError::Config(format!(
                        "the token of {} is not a valid header value (add the remote again with the right token)",
                        remote.label()
                    ))
                })?;
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        let stream = Self::tls_connect(remote).await?;
        exchange(stream, req).await
    }

    /// Builds a request.
    pub fn request(
        method: Method,
        path: &str,
        content_type: &str,
        body: ReqBody,
    ) -> Result<Request<ReqBody>, ClientError> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "mayfly")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| protocol("build request", e))
    }

    /// Decodes an error response.
    pub async fn error_of(response: Response<Incoming>) -> ClientError {
        let status = response.status();
        match response.into_body().collect().await {
            Ok(body) => match serde_json::from_slice::<ErrorBody>(&body.to_bytes()) {
                Ok(e) => ClientError::Api(e.error),
                Err(_) => ClientError::Protocol(format!("the daemon answered {status}")),
            },
            Err(e) => lost("reading the answer", e),
        }
    }

    /// Sends a JSON request and decodes a JSON answer (`()` for none).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| protocol("encode request", e))?,
            None => Vec::new(),
        };
        let req = Self::request(method, path, "application/json", full(bytes))?;
        let response = self.send(req).await?;
        if !response.status().is_success() {
            return Err(Self::error_of(response).await);
        }
        let no_content = response.status() == StatusCode::NO_CONTENT;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| lost("reading the answer", e))?
            .to_bytes();
        let body = if no_content || body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            body
        };
        serde_json::from_slice(&body).map_err(|e| protocol("decode the daemon's answer", e))
    }

    /// Calls `action` of the API table, its path filled by `args` (encoded there), with
    /// `body` as JSON; decodes a JSON answer (`()` for none).
    pub async fn act<T: DeserializeOwned>(
        &self,
        action: mayfly_api::Action,
        args: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        self.call(method(action), &action.path(args), body).await
    }

    /// The client and bare name for an instance argument: `REMOTE:NAME` names an instance
    /// of a configured remote; anything else is this client's.
    pub fn target<'a>(&self, name: &'a str) -> Result<(Client, &'a str), ClientError> {
        match name.split_once(':') {
            Some((remote, bare)) => {
                let remote = Remote::configured(remote)
                    .map_err(|e| ClientError::Config(format!("in `{name}` (REMOTE:NAME): {e}")))?;
                Ok((Client::for_remote(self.socket.clone(), remote), bare))
            }
            None => Ok((self.clone(), name)),
        }
    }

    /// Sends `body` as JSON with `Upgrade: mayfly-stream` and returns the upgraded stream,
    /// and the instance the daemon created for it, if it says (`POST /v1/run`: name, id).
    pub async fn upgrade(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(TokioIo<hyper::upgrade::Upgraded>, Option<(String, String)>), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| protocol("encode request", e))?;
        let mut req = Self::request(Method::POST, path, "application/json", full(bytes))?;
        req.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        req.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static(mayfly_api::stream::UPGRADE_PROTOCOL),
        );
        let response = self.send(req).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(Self::error_of(response).await);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let instance = header(mayfly_api::stream::INSTANCE_HEADER)
            .zip(header(mayfly_api::stream::INSTANCE_ID_HEADER));
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| protocol("switch to streaming", e))?;
        Ok((TokioIo::new(upgraded), instance))
    }
}
