//! The web console at `/ui/`: pages rendered here (maud) and made live by
//! htmx, which is vendored into the binary (`assets/`), so an air-gapped
//! control plane serves all of it.
//!
//! The console keeps no state and decides nothing. Each page asks the REST
//! API for what it shows, in-process, with the signed-in user's token: the
//! request goes through the same router and policy layer as any client's,
//! so roles, tenants, site scopes and the audit trail apply exactly as in
//! the API, and a refusal is the API's own. The session cookie holds that
//! API token (HttpOnly, Secure, SameSite=Strict, path `/ui`).
//!
//! Every page and action works as a plain link or form; htmx only spares
//! full page loads (`hx-boost`) and refreshes the live parts when
//! `/ui/live` (server-sent events) says to.

mod pages;

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

/// The cookie that holds a signed-in user's API token.
const SESSION_COOKIE: &str = "outpost_session";

/// How often `/ui/live` tells open pages to refresh their live parts.
const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// The console's routes, in front of `api` (the REST API's router, which
/// every page calls).
pub fn router(api: Router) -> Router {
    let console = Console { api };
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/sites", get(pages::sites))
        .route("/ui/sites/{name}", get(pages::site))
        .route("/ui/deployments", get(pages::deployments))
        .route("/ui/deployments/{name}", get(pages::deployment))
        .route(
            "/ui/deployments/{name}/{command}",
            get(pages::confirm_command).post(pages::run_command),
        )
        .route("/ui/apply", get(pages::apply_form).post(pages::apply))
        .route("/ui/applications", get(pages::applications))
        .route("/ui/secrets", get(pages::secrets))
        .route("/ui/tokens", get(pages::tokens))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/signin", get(pages::sign_in_form).post(pages::sign_in))
        .route("/ui/signout", axum::routing::post(pages::sign_out))
        .route("/ui/live", get(live))
        .route("/ui/assets/htmx.min.js", get(|| asset(HTMX, "text/javascript")))
        .route(
            "/ui/assets/htmx-sse.min.js",
            get(|| asset(HTMX_SSE, "text/javascript")),
        )
        .route("/ui/assets/console.css", get(|| asset(CSS, "text/css")))
        .layer(axum::middleware::from_fn(sign_in_as_whole_page))
        .with_state(console)
}

/// A request htmx made (a boosted link or form, a live refresh) that must
/// sign in first goes to the sign-in page as a whole page (`HX-Redirect`),
/// instead of having it swapped into the page it came from.
async fn sign_in_as_whole_page(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let from_htmx = request.headers().contains_key("hx-request");
    let mut response = next.run(request).await;
    let to_sign_in = response
        .headers()
        .get(header::LOCATION)
        .filter(|location| location.as_bytes().starts_with(b"/ui/signin"))
        .cloned();
    if from_htmx
        && response.status().is_redirection()
        && let Some(location) = to_sign_in
    {
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().remove(header::LOCATION);
        response.headers_mut().insert("hx-redirect", location);
    }
    response
}

/// htmx 2.0.10 and its server-sent events extension (0BSD), from the
/// django-htmx 1.29.0 wheel on PyPI; see `assets/VENDORED.md`.
const HTMX: &str = include_str!("assets/htmx.min.js");
const HTMX_SSE: &str = include_str!("assets/htmx-sse.min.js");
const CSS: &str = include_str!("assets/console.css");

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/live`: an event `change` every few seconds, on which the live
/// parts of the open page ask for themselves again. It carries no data
/// (what the page then fetches goes through the API with the session's
/// token); it is only for a browser with a session.
async fn live(_caller: Caller) -> Response {
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(LIVE_EVERY).await;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b"event: change\ndata: tick\n\n")),
            (),
        ))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ticks),
    )
        .into_response()
}

#[derive(Clone)]
pub(crate) struct Console {
    api: Router,
}

/// A signed-in user: the API token from the session cookie, and the
/// address their request came from (the audit trail records it).
pub(crate) struct Caller {
    token: String,
    source: Option<ConnectInfo<SocketAddr>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Response> {
        let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
        match session_token(&parts.headers) {
            Some(token) => Ok(Caller { token, source }),
            None => Err(to_sign_in(parts.uri.path())),
        }
    }
}

/// Where a request came from, for the audit trail of what it asks the API.
pub(crate) struct Source(Option<ConnectInfo<SocketAddr>>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Self::Rejection> {
        Ok(Source(parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned()))
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

/// To the sign-in page, and back to `then` after it.
fn to_sign_in(then: &str) -> Response {
    let query = serde_urlencoded::to_string([("then", then)]).unwrap_or_default();
    Redirect::to(&format!("/ui/signin?{query}")).into_response()
}

/// The `Set-Cookie` value that starts a session with `token`.
fn session_cookie(token: &str, max_age: std::time::Duration) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

/// What the API answered when it did not say yes: its status and message.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            // An expired or revoked token: sign in again.
            let mut response = to_sign_in("/ui/");
            if let Ok(value) = session_cookie("", std::time::Duration::ZERO).parse() {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return response;
        }
        let title = match self.status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            status if status.is_client_error() => "Refused",
            _ => "The control plane could not answer",
        };
        let body = page(
            title,
            "",
            html! {
                div.refusal role="alert" {
                    p { strong { (self.status.as_u16()) } " " (self.message) }
                }
                p { a href="/ui/" { "Back to the overview" } }
            },
        );
        (self.status, body).into_response()
    }
}

impl Console {
    /// One request to the REST API (`path` below `/api/v1`) as `caller`.
    async fn call(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Bytes, Refusal> {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", caller.token));
        if let Some((content_type, _)) = &body {
            request = request.header(header::CONTENT_TYPE, *content_type);
        }
        let mut request = request
            .body(body.map_or_else(Body::empty, |(_, bytes)| Body::from(bytes)))
            .map_err(|err| Refusal {
                status: StatusCode::BAD_REQUEST,
                message: format!("{path}: {err}"),
            })?;
        if let Some(source) = caller.source {
            request.extensions_mut().insert(source);
        }
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), outpost_api::limits::MAX_BODY_BYTES * 4)
            .await
            .map_err(|err| Refusal {
                status: StatusCode::BAD_GATEWAY,
                message: format!("reading the answer to {path}: {err}"),
            })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<outpost_api::wire::ErrorBody>(&bytes)
            .map(|body| {
                let mut message = body.error.message;
                for diagnostic in body.error.diagnostics {
                    message.push_str(&format!("\n{diagnostic}"));
                }
                message
            })
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(Refusal { status, message })
    }

    /// `GET` a JSON answer.
    async fn get<T: DeserializeOwned>(&self, caller: &Caller, path: &str) -> Result<T, Refusal> {
        let bytes = self.call(caller, Method::GET, path, None).await?;
        decode(path, &bytes)
    }
}

fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|err| Refusal {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the answer to {path} was not understood: {err}"),
    })
}

/// A form post is the console's own only if the browser says it comes
/// from this origin (with the SameSite=Strict cookie, a second guard
/// against cross-site requests).
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let refused = |why: &str| Refusal {
        status: StatusCode::FORBIDDEN,
        message: format!("this form was not sent from the console ({why})"),
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused("Sec-Fetch-Site"));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if origin.strip_prefix("https://") != Some(host) && !host.is_empty() {
            return Err(refused("Origin"));
        }
    }
    Ok(())
}

/// A whole page: the navigation, and `content` under `title`. `live`
/// (the page's own path and query) makes `#live` refresh itself when
/// `/ui/live` says to.
fn page(title: &str, live: &str, content: Markup) -> Html<String> {
    let nav = [
        ("/ui/", "Overview"),
        ("/ui/sites", "Sites"),
        ("/ui/deployments", "Deployments"),
        ("/ui/applications", "Applications"),
        ("/ui/apply", "Apply"),
        ("/ui/secrets", "Secrets"),
        ("/ui/tokens", "Tokens"),
        ("/ui/audit", "Audit"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Refusals (403, 404, a wrong manifest) are pages too: show them.
                meta name="htmx-config" content=r#"{"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;
                title { (title) " · Outpost" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/htmx.min.js" {}
                script src="/ui/assets/htmx-sse.min.js" {}
            }
            body hx-boost="true" {
                header {
                    a.brand href="/ui/" { "Outpost" }
                    nav aria-label="Main" {
                        @for (href, name) in nav {
                            a href=(href) { (name) }
                        }
                    }
                    form.signout method="post" action="/ui/signout" {
                        button type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    @if live.is_empty() {
                        (content)
                    } @else {
                        div hx-ext="sse" sse-connect="/ui/live" {
                            // Links and forms inside keep htmx's defaults (whole pages).
                            div #live hx-get=(live) hx-trigger="sse:change" hx-select="#live" hx-swap="outerHTML" hx-disinherit="*" {
                                (content)
                            }
                        }
                    }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// A query string from pairs, `?` included when not empty.
fn query(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, value)| !value.is_empty()).collect();
    match serde_urlencoded::to_string(pairs) {
        Ok(text) if !text.is_empty() => format!("?{text}"),
        _ => String::new(),
    }
}
