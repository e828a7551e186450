//! vigil's reviewer web console: a single page for reviewers and managers, served at
//! `/console` by `vigil serve` on both of its listeners.
//!
//! The page is plain HTML, CSS and JavaScript, compiled into the binary with
//! `include_str!`: nothing is built with npm and nothing is loaded from anywhere but the server
//! it came from (the Content-Security-Policy says so to the browser). It has no access of its
//! own: every case, grant, decision and record it shows comes from the `/v1` API with the
//! token the reviewer signed in with, so the API's rules and audit trail apply unchanged. Loaded
//! from the workstation listener (mutual TLS), it can read content under a grant; loaded from
//! the plain listener, the API refuses content and the console says why. Its requests carry
//! credentials to its own origin only (`credentials: "same-origin"`), which is what makes a
//! browser present the workstation certificate. An open record is closed, its text removed
//! from the page, as soon as its grant ends: at the grant's expiry, or when a poll of the
//! grant's metadata (every 2 s, audited as `grant.view`, never a second content read) finds
//! it revoked. A sign-in link's `#token=` leaves the address bar at once and never replaces
//! the session in force without asking.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// Its script.
pub const CONSOLE_JS: &str = include_str!("../assets/console.js");
/// Its style sheet.
pub const CONSOLE_CSS: &str = include_str!("../assets/console.css");

/// What the browser may load and run: this origin's own script, styles and API, nothing else;
/// no inline script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The console's routes: `/console` (the page), `/console/console.js`,
/// `/console/console.css`; `/console/` redirects to `/console`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Revalidated on every load, so an upgraded server never runs a stale script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No URL with a scheme or a protocol-relative one: everything comes from this origin.
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("console.js", CONSOLE_JS),
            ("console.css", CONSOLE_CSS),
        ] {
            for needle in ["http://", "https://", "src=\"//", "href=\"//", "url(//"] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
        assert!(INDEX_HTML.contains("src=\"/console/console.js\""));
        assert!(INDEX_HTML.contains("href=\"/console/console.css\""));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
    }

    #[test]
    fn api_calls_carry_the_workstation_certificate_to_this_origin_only() {
        // "omit" lets a browser withhold the client certificate (tests/console.rs shows
        // Chromium doing so); "include" would offer credentials to other origins.
        assert!(CONSOLE_JS.contains(r#"credentials: "same-origin", mode: "same-origin""#));
        for mode in [r#"credentials: "omit""#, r#"credentials: "include""#] {
            assert!(!CONSOLE_JS.contains(mode), "console.js uses {mode}");
        }
    }

    #[test]
    fn content_is_never_written_as_html() {
        // Prompts and completions are attacker-controlled: the script only ever sets text.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!CONSOLE_JS.contains(sink), "console.js uses {sink}");
        }
    }
}
