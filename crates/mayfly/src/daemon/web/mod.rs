//! The web dashboard: its page and assets, embedded in the binary, and the terminal's
//! WebSocket (see docs/web.md).
//!
//! The page is plain HTML, CSS and JavaScript modules (no build step); xterm.js comes from
//! Debian's `node-xterm`, wrapped into one script by the crate's build.rs. Every call the page
//! makes goes to the same API as the CLI's, with the session cookie of `POST /v1/login`.

mod terminal;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mayfly_engine::Engine;

pub(crate) use terminal::terminal;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the page, by the path it is served at.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("page/index.html"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("page/style.css"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/app.js"),
    },
    Asset {
        path: "/ui/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/api.js"),
    },
    Asset {
        path: "/ui/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/dom.js"),
    },
    Asset {
        path: "/ui/views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/views.js"),
    },
    Asset {
        path: "/ui/shared.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/shared.js"),
    },
    Asset {
        path: "/ui/instances.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/instances.js"),
    },
    Asset {
        path: "/ui/launch.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/launch.js"),
    },
    Asset {
        path: "/ui/templates.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/templates.js"),
    },
    Asset {
        path: "/ui/resources.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/resources.js"),
    },
    Asset {
        path: "/ui/events.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/events.js"),
    },
    Asset {
        path: "/ui/terminal.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/terminal.js"),
    },
    Asset {
        path: "/ui/xterm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/xterm.js")),
    },
    Asset {
        path: "/ui/xterm.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/xterm.css")),
    },
];

/// What the page may load and where it may connect: itself only (no inline script, no
/// third party), and it may not be framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

fn serve(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `/ui/actions.js`: the API's action table as the page's module, so that the page, like the
/// CLI, takes every method and path from [`mayfly_api::actions::ACTIONS`].
fn actions_module() -> &'static Asset {
    static MODULE: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    MODULE.get_or_init(|| {
        let table: serde_json::Map<String, serde_json::Value> = mayfly_api::actions::ACTIONS
            .iter()
            .map(|a| {
                (
                    a.id.to_owned(),
                    serde_json::json!([a.method.as_str(), a.path]),
                )
            })
            .collect();
        let js = format!(
            "// The API's action table (generated by the daemon from mayfly_api::actions).\n\
             export const ACTIONS = {};\n",
            serde_json::Value::Object(table)
        );
        Asset {
            path: "/ui/actions.js",
            content_type: "text/javascript; charset=utf-8",
            body: js.leak().as_bytes(),
        }
    })
}

/// The page and its assets (`/`, `/ui/...`): served without authentication (they hold no
/// data; every call they make is authenticated).
pub(crate) fn routes() -> Router<Arc<Engine>> {
    let mut router = Router::new();
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    let actions = actions_module();
    router.route(actions.path, get(move || async move { serve(actions) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_once_with_a_type() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.path), "{} twice", a.path);
            assert!(a.path == "/" || a.path.starts_with("/ui/"), "{}", a.path);
            assert!(!a.body.is_empty(), "{} is empty", a.path);
        }
    }

    #[test]
    fn xterm_is_embedded_whole() {
        let js = ASSETS
            .iter()
            .find(|a| a.path == "/ui/xterm.js")
            .map(|a| String::from_utf8_lossy(a.body).into_owned())
            .unwrap_or_default();
        // The wrapped modules, not Debian's broken 288-byte stub.
        assert!(js.len() > 100_000, "xterm.js is {} bytes", js.len());
        assert!(js.contains("defs[\"public/Terminal\"]"));
        assert!(js.contains("window.Terminal = load('public/Terminal').Terminal"));
    }
}
