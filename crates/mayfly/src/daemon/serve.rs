//! The accept loops: the unix socket and the TCP+TLS listeners serve the same API, each
//! connection with HTTP/1.1 (upgrades included) and the limits of the edge:
//!
//! - request headers: at most [`MAX_HEADER_BYTES`] (`431` beyond), read within
//!   [`HEADER_READ_TIMEOUT`], which is also how long an idle keep-alive connection stays open
//!   (hyper starts that timer whenever it waits for a request head): a slowloris client that
//!   trickles its headers is cut off;
//! - TLS handshakes: within [`TLS_HANDSHAKE_TIMEOUT`];
//! - connections: at most [`MAX_CONNECTIONS`] per listener and [`MAX_PER_CLIENT`] per client
//!   (a TCP client is its IPv4 address or IPv6 /64, a unix one its user id). One HTTP/1.1
//!   connection carries one request (or stream) at a time, and an upgraded connection (exec,
//!   console, terminal) keeps its place until its stream ends, so this also caps a client's
//!   concurrent streams; the connection over the cap is answered `429` with the API's error
//!   body and closed;
//! - request bodies: the API's own caps (JSON bodies, template uploads), and a request body that
//!   stalls (no byte for [`BODY_READ_TIMEOUT`] while the handler waits for one) gets its
//!   connection closed, so a slow-body client cannot hold a handler either (whatever
//!   `Content-Type` it claims). Uploads (template archives to `POST /v1/templates`) are
//!   exempt: their source (a pipe from a download) may pause for longer, and the connection
//!   caps bound what a stalled one holds.
//!
//! Every request gets its connection's [`Peer`] as an extension; [`super::auth::authenticate`]
//! (layered over the whole API) turns it into the [`super::auth::Caller`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mayfly_api::{ApiError, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

use super::api::ApiFailure;
use super::auth::Peer;

/// Largest request head (start line and headers).
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;

/// A request head must arrive within this long; an idle connection is closed after it.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body that sends nothing for this long while it is read is cut off.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A TLS handshake must end within this long.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections one listener serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// Connections (so requests and streams) one client may have open at once.
pub(crate) const MAX_PER_CLIENT: usize = 64;

/// Connections over a cap answered `429` at once (past it they are closed unanswered).
const MAX_REFUSING: usize = 64;

/// How long a stopping daemon lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Who counts as one client for [`MAX_PER_CLIENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    Uid(u32),
    Ip(IpAddr),
}

impl From<Peer> for ClientKey {
    fn from(p: Peer) -> Self {
        match p {
            Peer::Unix { uid } => ClientKey::Uid(uid),
            Peer::Tcp { addr } => ClientKey::Ip(client_ip(addr.ip())),
        }
    }
}

/// The address a TCP client counts as: its IPv4 address, or the /64 network of its IPv6 one
/// (a single host is commonly given a whole /64, so it could otherwise open [`MAX_PER_CLIENT`]
/// connections from each of its addresses).
fn client_ip(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

/// The connections a listener has open: a total cap and a count per client.
#[derive(Debug)]
pub(crate) struct Gate {
    total: Arc<Semaphore>,
    per_client: Mutex<HashMap<ClientKey, usize>>,
    /// Connections being answered `429` (bounded too: past it they are just closed).
    refusing: Arc<Semaphore>,
}

/// A connection's place in the [`Gate`]; given back when dropped.
#[derive(Debug)]
struct Ticket {
    gate: Arc<Gate>,
    key: ClientKey,
    _total: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.gate.clients();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// A connection's stream holding its [`Ticket`]: the place is given back when the stream is
/// dropped, which for an upgraded connection (exec, console, terminal) is when the stream
/// ends, not when the HTTP exchange that started it does.
#[derive(Debug)]
struct Held<I> {
    io: I,
    _ticket: Ticket,
}

impl<I> Held<I> {
    fn new(io: I, ticket: Ticket) -> Self {
        Held {
            io,
            _ticket: ticket,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Held<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Held<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy)]
enum Why {
    Busy,
    ClientBusy,
}

/// A connection not let in: why, and its place among those answered `429` (`None`: no room
/// to answer, close it).
#[derive(Debug)]
struct Refusal {
    why: Why,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Gate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Gate {
            total: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_client: Mutex::new(HashMap::new()),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        })
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(self: &Arc<Self>, peer: Peer) -> Result<Ticket, Refusal> {
        let refuse = |why| {
            let permit = Arc::clone(&self.refusing).try_acquire_owned().ok();
            Refusal { why, permit }
        };
        let Ok(permit) = Arc::clone(&self.total).try_acquire_owned() else {
            return Err(refuse(Why::Busy));
        };
        let key = ClientKey::from(peer);
        let mut map = self.clients();
        let n = map.entry(key).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return Err(refuse(Why::ClientBusy));
        }
        *n += 1;
        Ok(Ticket {
            gate: Arc::clone(self),
            key,
            _total: permit,
        })
    }
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    b
}

/// A request body that cuts its connection off ([`TimedBody::cut`]) when no data comes for
/// [`BODY_READ_TIMEOUT`] while it is read.
struct TimedBody {
    inner: Incoming,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Tells the connection to close (its handler is dropped with it).
    cut: Arc<tokio::sync::Notify>,
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_READ_TIMEOUT)));
                if timer.as_mut().poll(cx).is_ready() {
                    // No answer: the connection goes (the handler with it); the request never
                    // arrived whole.
                    this.cut.notify_one();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `req` is a template upload (an archive body for `POST /v1/templates`), whose body
/// may pause for longer than [`BODY_READ_TIMEOUT`]. Decided by the route, not only by the
/// `Content-Type` the client chose: every other body (the login's included, which anyone may
/// send) is read with the deadline whatever type it claims.
fn is_upload<B>(req: &hyper::Request<B>) -> bool {
    let path = req.uri().path().trim_end_matches('/');
    let action = mayfly_api::Action::ImportTemplate;
    req.method().as_str() == action.method().as_str()
        && path == action.path(&[])
        && req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.starts_with("application/json"))
}

/// Waits (at most [`SHUTDOWN_GRACE`]) until the connections of `tasks` have ended. Upgraded
/// streams (exec sessions) run in tasks of their own and are not waited for: the daemon's
/// exit ends them, and their programs keep running.
async fn drain(mut tasks: tokio::task::JoinSet<()>) {
    let all = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all).await;
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until it ends (or, at shutdown, until its request is answered).
async fn serve_connection<I>(io: I, peer: Peer, app: Router, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let cut = Arc::new(tokio::sync::Notify::new());
    let cut_by_body = Arc::clone(&cut);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        let upload = is_upload(&req);
        let cut = Arc::clone(&cut_by_body);
        let req = req.map(|inner| {
            if !upload {
                Body::new(TimedBody {
                    inner,
                    timer: None,
                    cut,
                })
            } else {
                Body::new(inner)
            }
        });
        hyper::service::Service::call(&svc, req)
    });
    let conn = http1()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = cut.notified() => {
            tracing::debug!(?peer, "request body stalled: connection closed");
            return;
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(?peer, "connection ended: {e}");
    }
}

/// Answers every request of a connection that is over a cap with `429` and closes it.
async fn refuse_connection<I>(io: I, peer: Peer, why: Why)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (message, hint) = match why {
        Why::ClientBusy => (
            format!("too many connections from this client (at most {MAX_PER_CLIENT} at once)"),
            "close some streams (logs --follow, exec, events --follow) and try again",
        ),
        Why::Busy => (
            format!("the daemon serves too many connections (at most {MAX_CONNECTIONS})"),
            "try again later",
        ),
    };
    tracing::warn!(?peer, "connection refused: {message}");
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
        let mut r =
            ApiFailure(ApiError::new(ErrorCode::TooManyRequests, message.clone()).with_hint(hint))
                .into_response();
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        std::future::ready(Ok::<_, std::convert::Infallible>(r.map(Body::new)))
    });
    let conn = http1()
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, conn).await;
}

/// Serves the unix socket until `stop` turns true, then lets open connections finish.
pub(crate) async fn serve_unix(
    listener: tokio::net::UnixListener,
    app: Router,
    stop: watch::Receiver<bool>,
) {
    let gate = Gate::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        // Reap the connections that ended (the set holds only live ones).
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stopping) => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("cannot accept on the API socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!("cannot read the peer of an API connection: {e}");
                continue;
            }
        };
        let peer = Peer::Unix { uid };
        match gate.enter(peer) {
            Ok(ticket) => {
                let (app, stop) = (app.clone(), stop.clone());
                tasks.spawn(serve_connection(Held::new(stream, ticket), peer, app, stop));
            }
            Err(Refusal {
                why,
                permit: Some(permit),
            }) => {
                tasks.spawn(async move {
                    refuse_connection(stream, peer, why).await;
                    drop(permit);
                });
            }
            Err(Refusal { permit: None, .. }) => drop(stream),
        }
    }
    drain(tasks).await;
}

/// Serves a TCP listener with TLS until `stop` turns true, then lets open connections finish.
pub(crate) async fn serve_tcp(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let gate = Gate::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        // Reap the connections that ended (the set holds only live ones).
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stopping) => break,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cannot accept on a TCP listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer::Tcp { addr };
        let entered = gate.enter(peer);
        if let Err(Refusal { permit: None, .. }) = entered {
            drop(stream);
            continue;
        }
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
        // In the set, so that a stopping daemon lets the connection finish its request.
        tasks.spawn(async move {
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
            match entered {
                Ok(ticket) => serve_connection(Held::new(tls, ticket), peer, app, stop).await,
                Err(Refusal { why, permit }) => {
                    refuse_connection(tls, peer, why).await;
                    drop(permit);
                }
            }
        });
    }
    drain(tasks).await;
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::{ClientKey, Peer};

    fn key(addr: &str) -> ClientKey {
        ClientKey::from(Peer::Tcp {
            addr: SocketAddr::new(addr.parse::<IpAddr>().unwrap(), 1234),
        })
    }

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_network() {
        assert_eq!(key("10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        // Addresses of one /64 are one client; another /64 is another.
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:fffe")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
