//! Who is calling: every connection's requests carry a [`Caller`] (inserted by
//! [`authenticate`], which the server loop puts in front of the API on both listeners: the
//! unix socket's peer from `SO_PEERCRED`, or the TCP client's token), which the audit log and
//! the event bus name as the actor.
//!
//! Over TCP every request needs authentication except `POST /v1/login` and the static page
//! (`/`, `/ui/...`): a bearer token (`Authorization: Bearer SECRET`), or the web page's session
//! cookie, which `POST /v1/login` trades for a token. A request authenticated by the cookie
//! that is not GET/HEAD must carry `X-Mayfly-Request: 1` (a cross-site form cannot set it), and
//! a WebSocket upgrade authenticated by the cookie must come from an `Origin` that is the
//! request's `Host`. The unix socket (0600, root only) needs nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mayfly_api::{ApiError, ErrorCode};
use mayfly_engine::Engine;

use super::api::{ApiFailure, AppState, json_body};

/// The web session's cookie.
pub(crate) const SESSION_COOKIE: &str = "mayfly_session";

/// The header a cookie-authenticated request that changes something must carry.
pub(crate) const CSRF_HEADER: &str = "x-mayfly-request";

/// A web session lasts this long after the login.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// At most this many web sessions at once (the oldest is ended to make room).
const MAX_SESSIONS: usize = 1024;

/// Failed logins one client address may make per [`LOGIN_WINDOW`]; past them its logins are
/// answered `429` without being tried (nor audited: a flood of failures would otherwise push
/// the real records out of the bounded event log).
const LOGIN_FAILURES: u32 = 10;

/// See [`LOGIN_FAILURES`].
const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose failed logins are counted at once (the oldest window goes first).
const MAX_LOGIN_CLIENTS: usize = 4096;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// As events name it: `unix:uid=0`, `token:NAME`, `cert:CN`.
    pub actor: String,
}

impl Caller {
    /// The caller of a request that carries none (a test router): the local root.
    #[allow(dead_code)] // the default of `audit::around`
    pub(crate) fn local() -> Self {
        Caller {
            actor: "unix:uid=0".to_owned(),
        }
    }
}

/// Where a connection comes from (inserted into each of its requests by the server loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// The unix socket, with the peer's user id.
    Unix { uid: u32 },
    /// A TLS connection on a TCP listener.
    Tcp { addr: SocketAddr },
}

impl Peer {
    /// Whether the request came over TCP (and so had to authenticate).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Peer::Tcp { .. })
    }
}

#[derive(Debug)]
struct Session {
    /// The hash of the token it was made from: checked on every use, so that revoking the
    /// token ends the session.
    hash: String,
    created: Instant,
}

/// The daemon's authentication state: the engine (tokens) and the live web sessions.
#[derive(Debug)]
pub(crate) struct Auth {
    engine: Arc<Engine>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Failed logins by client address: when its window began, how many.
    login_failures: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
    /// The TLS certificate's fingerprint (when a TCP listener serves).
    pub fingerprint: Option<String>,
}

fn failure(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ApiFailure {
    ApiFailure(ApiError::new(code, message).with_hint(hint))
}

fn unauthenticated(message: impl Into<String>) -> Response {
    let mut r = failure(
        ErrorCode::Unauthenticated,
        message,
        "send `Authorization: Bearer TOKEN` (make a token with `mayfly token create NAME` on \
         the daemon's host), or log in on the web page",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mayfly\""),
    );
    r
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The bearer token of `headers`: `Some(Err)` when the header is there but is not one.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let v = v.to_str().map_err(|_| ());
    Some(v.and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ').ok_or(())?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            Ok(token.trim())
        } else {
            Err(())
        }
    }))
}

/// Whether `path` is served over TCP without authentication.
fn is_public(method: &Method, path: &str) -> bool {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    (path == "/v1/login" && method == Method::POST) || path == "/" || path.starts_with("/ui/")
}

/// Whether the `Origin` of `headers` is the page of the request's `Host` (`https://HOST`).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .strip_prefix("https://")
            .is_some_and(|o| o.trim_end_matches('/').eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// The rules for a request authenticated by the session cookie (which a browser also sends
/// with requests other sites make it send): one that upgrades its connection (the terminal's
/// WebSocket, or any other upgrade) must come from the daemon's own page (`Origin` = `Host`),
/// and one that is not GET/HEAD must carry `X-Mayfly-Request: 1` (a cross-site form cannot).
fn cookie_rules(method: &Method, headers: &HeaderMap) -> Result<(), ApiFailure> {
    if headers.contains_key(header::UPGRADE) && !same_origin(headers) {
        return Err(failure(
            ErrorCode::Forbidden,
            "a WebSocket authenticated by the session cookie must come from the daemon's own page",
            "open the terminal from the daemon's web page (its Origin must be the Host)",
        ));
    }
    if method != Method::GET
        && method != Method::HEAD
        && headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1")
    {
        return Err(failure(
            ErrorCode::Forbidden,
            "a request authenticated by the session cookie that changes something must carry `X-Mayfly-Request: 1`",
            "send the header `X-Mayfly-Request: 1` (the web page does), or use a bearer token",
        ));
    }
    Ok(())
}

fn random_id() -> Result<String, ApiFailure> {
    let mut bytes = [0u8; 32];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
        ApiFailure(ApiError::new(
            ErrorCode::Internal,
            format!("cannot read random bytes: {e}"),
        ))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Auth {
    pub(crate) fn new(engine: Arc<Engine>, fingerprint: Option<String>) -> Self {
        Auth {
            engine,
            sessions: Mutex::new(HashMap::new()),
            login_failures: Mutex::new(HashMap::new()),
            fingerprint,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token behind a bearer secret, as a caller.
    async fn by_secret(&self, secret: &str) -> Result<Option<Caller>, Response> {
        match self.engine.authenticate_token(secret).await {
            Ok(name) => Ok(name.map(|n| Caller {
                actor: format!("token:{n}"),
            })),
            Err(e) => Err(ApiFailure::from(e).into_response()),
        }
    }

    /// The caller of session `id` (`None`: no such session, or its token was revoked).
    async fn by_session(&self, id: &str) -> Result<Option<Caller>, Response> {
        let hash = {
            let mut sessions = self.sessions();
            match sessions.get(id) {
                Some(s) if s.created.elapsed() < SESSION_LIFETIME => s.hash.clone(),
                Some(_) => {
                    sessions.remove(id);
                    return Ok(None);
                }
                None => return Ok(None),
            }
        };
        match self.engine.token_by_hash(hash).await {
            Ok(Some(name)) => Ok(Some(Caller {
                actor: format!("token:{name}"),
            })),
            Ok(None) => {
                self.sessions().remove(id);
                Ok(None)
            }
            Err(e) => Err(ApiFailure::from(e).into_response()),
        }
    }

    /// Authenticates a TCP request: its caller, or the refusal to answer.
    async fn check(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        addr: SocketAddr,
    ) -> Result<Caller, Response> {
        if let Some(b) = bearer(headers) {
            let Ok(secret) = b else {
                return Err(unauthenticated(
                    "the Authorization header is not `Bearer TOKEN`",
                ));
            };
            return match self.by_secret(secret).await? {
                Some(c) => Ok(c),
                None => Err(unauthenticated(
                    "the bearer token is not valid (unknown or revoked)",
                )),
            };
        }
        let public = is_public(method, path);
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            match self.by_session(id).await? {
                Some(caller) => {
                    cookie_rules(method, headers).map_err(IntoResponse::into_response)?;
                    return Ok(caller);
                }
                // A browser keeps an ended session's cookie (a daemon restart ends them all):
                // it must still get the page and be able to log in again.
                None if public => {}
                None => {
                    let mut r = unauthenticated(
                        "the session has ended (logged out, expired, or its token was revoked)",
                    );
                    r.headers_mut()
                        .insert(header::SET_COOKIE, session_cookie("", Some(0)));
                    return Err(r);
                }
            }
        }
        if public {
            return Ok(Caller {
                actor: format!("tcp:{}", addr.ip()),
            });
        }
        Err(unauthenticated("authentication required"))
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, (Instant, u32)>> {
        self.login_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` has used up its failed logins of the current window.
    fn login_blocked(&self, ip: std::net::IpAddr) -> bool {
        self.failures()
            .get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < LOGIN_WINDOW && *n >= LOGIN_FAILURES)
    }

    /// Counts a failed login of `ip`.
    fn login_failed(&self, ip: std::net::IpAddr) {
        let mut map = self.failures();
        if !map.contains_key(&ip) && map.len() >= MAX_LOGIN_CLIENTS {
            map.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if map.len() >= MAX_LOGIN_CLIENTS
                && let Some(oldest) = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    fn add_session(&self, id: String, hash: String) {
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id,
            Session {
                hash,
                created: Instant::now(),
            },
        );
    }
}

/// The layer in front of the whole API, on both listeners: inserts [`Caller`] (and the
/// [`Auth`] the handlers below need), refuses unauthenticated TCP requests, and runs the
/// request as its caller.
pub(crate) async fn authenticate(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Unix { uid: 0 });
    let caller = match peer {
        Peer::Unix { uid } => Caller {
            actor: format!("unix:uid={uid}"),
        },
        Peer::Tcp { addr } => {
            let (headers, method, path) = (req.headers(), req.method(), req.uri().path());
            let login = *method == Method::POST && path.trim_end_matches('/') == "/v1/login";
            if login && auth.login_blocked(addr.ip()) {
                tracing::debug!(peer = %addr, "login refused: too many failed logins");
                return too_many_logins();
            }
            let caller = match auth.check(headers, method, path, addr).await {
                Ok(c) => c,
                Err(refusal) => {
                    tracing::debug!(peer = %addr, %path, "request refused: {}", refusal.status());
                    return refusal;
                }
            };
            if login {
                let ip = addr.ip();
                let response = run_as(&auth, caller, req, next).await;
                if response.status() == StatusCode::UNAUTHORIZED {
                    auth.login_failed(ip);
                }
                return response;
            }
            caller
        }
    };
    run_as(&auth, caller, req, next).await
}

/// Runs the rest of the API for `req` as `caller`.
async fn run_as(auth: &Arc<Auth>, caller: Caller, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Arc::clone(auth));
    req.extensions_mut().insert(caller.clone());
    mayfly_engine::events::with_actor(caller.actor, next.run(req)).await
}

fn too_many_logins() -> Response {
    let mut r = failure(
        ErrorCode::TooManyRequests,
        format!("too many failed logins from this address (at most {LOGIN_FAILURES} a minute)"),
        "check the token (`mayfly token list` on the daemon's host), then try again in a minute",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

fn session_cookie(id: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("mayfly_session=; Max-Age=0"))
}

fn no_auth_state() -> ApiFailure {
    ApiFailure(ApiError::new(
        ErrorCode::Unavailable,
        "this server has no session support",
    ))
}

/// Refuses token management over TCP: a stolen token must not mint others or revoke the
/// owner's.
fn local_only(peer: Option<Extension<Peer>>, what: &str) -> Result<(), ApiFailure> {
    if peer.is_some_and(|Extension(p)| p.is_remote()) {
        return Err(failure(
            ErrorCode::Forbidden,
            format!("tokens can only be {what} on the daemon's host"),
            "run `mayfly token ...` on the daemon's host (over its unix socket)",
        ));
    }
    Ok(())
}

/// `POST /v1/login`: `{"token": SECRET}` → 204 with the session cookie.
pub(crate) async fn login(
    auth: Option<Extension<Arc<Auth>>>,
    req: Request,
) -> Result<Response, ApiFailure> {
    let Some(Extension(auth)) = auth else {
        return Err(no_auth_state());
    };
    let body: mayfly_api::LoginRequest = json_body(req.into_body()).await?;
    let hash = mayfly_engine::tokens::sha256_hex(body.token.trim().as_bytes());
    match auth.engine.token_by_hash(hash.clone()).await? {
        Some(name) => {
            let id = random_id()?;
            auth.add_session(id.clone(), hash);
            tracing::info!(token = %name, "web session opened");
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&id, Some(SESSION_LIFETIME.as_secs())),
            );
            Ok(r)
        }
        None => Err(failure(
            ErrorCode::Unauthenticated,
            "the token is not valid (unknown or revoked)",
            "make a token with `mayfly token create NAME` on the daemon's host",
        )),
    }
}

/// `POST /v1/logout`: ends the session of the request's cookie.
pub(crate) async fn logout(
    auth: Option<Extension<Arc<Auth>>>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    if let (Some(Extension(auth)), Some(id)) = (auth, cookie(&headers, SESSION_COOKIE)) {
        auth.sessions().remove(id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", Some(0)));
    Ok(r)
}

/// `GET /v1/tokens`.
pub(crate) async fn list_tokens(
    State(engine): State<AppState>,
) -> Result<Json<Vec<mayfly_api::TokenInfo>>, ApiFailure> {
    Ok(Json(engine.list_tokens().await?))
}

/// `POST /v1/tokens` (unix socket only).
pub(crate) async fn create_token(
    State(engine): State<AppState>,
    peer: Option<Extension<Peer>>,
    auth: Option<Extension<Arc<Auth>>>,
    req: Request,
) -> Result<(StatusCode, Json<mayfly_api::CreatedToken>), ApiFailure> {
    local_only(peer, "created")?;
    let body: mayfly_api::CreateToken = json_body(req.into_body()).await?;
    let mut created = engine.create_token(&body.name).await?;
    created.fingerprint = auth.and_then(|Extension(a)| a.fingerprint.clone());
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /v1/tokens/{name}` (unix socket only).
pub(crate) async fn revoke_token(
    State(engine): State<AppState>,
    peer: Option<Extension<Peer>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<StatusCode, ApiFailure> {
    local_only(peer, "revoked")?;
    engine.revoke_token(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method, header};

    use super::{bearer, cookie, cookie_rules, is_public, same_origin};

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_read_from_their_headers() {
        let h = headers(&[
            (header::COOKIE, "a=1; mayfly_session=abc"),
            (header::COOKIE, "b=2"),
        ]);
        assert_eq!(cookie(&h, "mayfly_session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "none"), None);
        let h = headers(&[(header::AUTHORIZATION, "bearer  s3cret ")]);
        assert_eq!(bearer(&h), Some(Ok("s3cret")));
        let h = headers(&[(header::AUTHORIZATION, "Basic cm9vdA==")]);
        assert_eq!(bearer(&h), Some(Err(())));
        let h = headers(&[(header::AUTHORIZATION, "Bearer")]);
        assert_eq!(bearer(&h), Some(Err(())));
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_login_and_the_page_are_public() {
        assert!(is_public(&Method::POST, "/v1/login"));
        assert!(is_public(&Method::POST, "/v1/login/"));
        assert!(!is_public(&Method::GET, "/v1/login"));
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/ui/app.js"));
        assert!(!is_public(&Method::GET, "/v1/info"));
        assert!(!is_public(&Method::GET, "/metrics"));
        assert!(!is_public(&Method::GET, "/uix"));
    }

    #[test]
    fn cookie_requests_that_upgrade_need_the_origin_and_changes_the_header() {
        let page = [
            (header::HOST, "lab:8443"),
            (header::ORIGIN, "https://lab:8443"),
        ];
        // An upgrade of any spelling from another origin: refused.
        for upgrade in ["websocket", "WebSocket, foo", "mayfly-stream", " websocket"] {
            let h = headers(&[
                (header::HOST, "lab:8443"),
                (header::ORIGIN, "https://evil:8443"),
                (header::UPGRADE, upgrade),
            ]);
            assert!(cookie_rules(&Method::GET, &h).is_err(), "{upgrade}");
            let mut ok = headers(&page);
            ok.insert(header::UPGRADE, HeaderValue::from_str(upgrade).unwrap());
            assert!(cookie_rules(&Method::GET, &ok).is_ok(), "{upgrade}");
        }
        // A same-origin upgrade that is not a GET still needs the CSRF header.
        let mut h = headers(&page);
        h.insert(header::UPGRADE, HeaderValue::from_static("mayfly-stream"));
        assert!(cookie_rules(&Method::POST, &h).is_err());
        h.insert("x-mayfly-request", HeaderValue::from_static("1"));
        assert!(cookie_rules(&Method::POST, &h).is_ok());
        assert!(cookie_rules(&Method::GET, &HeaderMap::new()).is_ok());
        assert!(cookie_rules(&Method::DELETE, &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_origin_must_be_the_host() {
        let ok = headers(&[
            (header::HOST, "lab:8443"),
            (header::ORIGIN, "https://lab:8443"),
        ]);
        assert!(same_origin(&ok));
        for origin in [
            "http://lab:8443",
            "https://lab:9443",
            "https://evil",
            "null",
        ] {
            let h = headers(&[(header::HOST, "lab:8443"), (header::ORIGIN, origin)]);
            assert!(!same_origin(&h), "{origin}");
        }
        assert!(!same_origin(&headers(&[(header::HOST, "lab:8443")])));
    }
}
