//! The built-in HTTP server for WHEP (hyper, HTTP/1.1): the WHEP endpoints with CORS, plus
//! whatever extra routes the host adds (`framecache serve` adds its page, `/metrics` and
//! `/health`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{PatchOutcome, WhepEngine, WhepError};

/// Largest request body taken (an SDP offer is a few KB).
pub const MAX_BODY: usize = 64 * 1024;

/// A response produced by an extra route.
#[derive(Debug, Clone)]
pub struct Page {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

/// Extra routes: given the request (method, path with query, `Authorization`, body, ...), a
/// page or `None` for 404. They see every method: a route that serves only GET checks it.
pub type Routes = Arc<dyn Fn(&HttpRequest) -> Option<Page> + Send + Sync>;

/// One HTTP request as the WHEP core reads it: no HTTP library's types, so a host's own
/// server (or the C ABI's `fc_whep_handle`) hands it over as plain fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, … (a token: letters, digits and `!#$%&'*+-.^_`|~`).
    pub method: String,
    /// Path with query, e.g. `/whep/cam1` (starts with `/`).
    pub path: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `If-Match`.
    pub if_match: Option<String>,
    /// `Origin` (CORS).
    pub origin: Option<String>,
    /// The body (more than [`MAX_BODY`] bytes is answered with 413).
    pub body: Bytes,
    /// The body was longer than [`MAX_BODY`] and was not read (answered with 413 where a body
    /// is taken).
    pub body_too_large: bool,
    /// The client's address, where the server knows it (shown to operators, used in the
    /// input name of a WHIP publisher).
    pub peer: Option<std::net::SocketAddr>,
}

/// The client address of a request, put into its extensions by [`serve`] for [`handle`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl HttpRequest {
    /// Checks what an HTTP parser would have refused: a method that is not a token, a path that
    /// does not start with `/` or holds spaces or control characters.
    pub fn validate(&self) -> Result<(), String> {
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.method.is_empty() || !self.method.chars().all(tchar) {
            return Err(format!("method {:?} is not an HTTP token", self.method));
        }
        if !self.path.starts_with('/')
            || self.path.chars().any(|c| c.is_ascii_control() || c == ' ')
        {
            return Err(format!("path {:?} is not an absolute path", self.path));
        }
        Ok(())
    }

    fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or("")
    }
}

/// One HTTP response of the WHEP core: status, headers (lower-case names) and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in the order set, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl HttpResponse {
    fn new(status: u16, ct: Option<&str>, body: impl Into<Bytes>) -> HttpResponse {
        let mut r = HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        };
        if let Some(ct) = ct {
            r.set("content-type", ct);
        }
        r
    }

    /// Sets header `name` (lower case), replacing an earlier value.
    pub fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response of [`handle`].
pub type Resp = Response<Full<Bytes>>;

fn resp(status: u16, ct: Option<&str>, body: impl Into<Bytes>) -> HttpResponse {
    HttpResponse::new(status, ct, body)
}

fn error(e: &WhepError, retry_after: u32) -> HttpResponse {
    let mut r = resp(
        e.status(),
        Some("text/plain; charset=utf-8"),
        format!("{e}\n"),
    );
    if e.retry_later() {
        r.set("retry-after", &retry_after.to_string());
    }
    if matches!(e, WhepError::Unauthorized) {
        r.set("www-authenticate", "Bearer");
    }
    r
}

fn to_hyper(r: HttpResponse) -> Resp {
    let mut out = Response::new(Full::new(r.body));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (n, v) in r.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            out.headers_mut().insert(n, v);
        }
    }
    out
}

/// Serves `engine` (and `routes`) on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, engine: WhepEngine, routes: Option<Routes>) {
    serve_with(listener, engine, routes, None).await
}

/// As [`serve`], over HTTPS with the rustls server configuration `tls` (HTTP/1.1; a browser
/// page on an HTTPS origin can then call WHEP without mixed-content errors).
pub async fn serve_tls(
    listener: TcpListener,
    engine: WhepEngine,
    routes: Option<Routes>,
    tls: Arc<rustls::ServerConfig>,
) {
    // Offer HTTP/1.1 by ALPN: what this server speaks.
    let mut cfg = (*tls).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    serve_with(
        listener,
        engine,
        routes,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
    )
    .await
}

async fn serve_with(
    listener: TcpListener,
    engine: WhepEngine,
    routes: Option<Routes>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let engine = engine.clone();
        let routes = routes.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let engine = engine.clone();
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(handle(&engine, routes.as_ref(), req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .clone();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                }
                Some(acceptor) => {
                    // A client that never finishes the handshake is dropped.
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(sock),
                    )
                    .await;
                    match hs {
                        Ok(Ok(s)) => {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                        Ok(Err(e)) => log::debug!("https: handshake failed: {e}"),
                        Err(_) => log::debug!("https: handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Handles one hyper request: reads its body (at most [`MAX_BODY`]) and answers through
/// [`respond`]. Public for hosts that run their own hyper server.
pub async fn handle<B>(engine: &WhepEngine, routes: Option<&Routes>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let mut r = HttpRequest {
        method: req.method().as_str().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
        content_type: header(hyper::header::CONTENT_TYPE),
        authorization: header(hyper::header::AUTHORIZATION),
        if_match: header(hyper::header::IF_MATCH),
        origin: header(hyper::header::ORIGIN),
        body: Bytes::new(),
        body_too_large: false,
        peer: req.extensions().get::<PeerAddr>().map(|p| p.0),
    };
    // Only a request that takes a body has it read (and limited) before the core sees it.
    if matches!(req.method(), &Method::POST | &Method::PATCH) {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => r.body = b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                r.body_too_large = true;
            }
            Err(_) => {
                let early = resp(400, Some("text/plain"), "request body could not be read\n");
                return to_hyper(cors(engine, r.origin.as_deref(), early).1);
            }
        }
    }
    to_hyper(respond(engine, routes, r).await)
}

/// The WHEP and WHIP HTTP semantics, independent of any HTTP server: routing of `/whep/STREAM`
/// and `/whip/KEY` (POST an offer) and `/whep/STREAM/RESOURCE`, `/whip/KEY/RESOURCE` (PATCH
/// trickle or ICE restart, DELETE), OPTIONS with the
/// accepted types, CORS against the allowed origins, bearer authorization, 404/405/413 with
/// their headers, and `routes` for any other GET. Both the hyper server and `fc_whep_handle`
/// answer through it.
pub async fn respond(
    engine: &WhepEngine,
    routes: Option<&Routes>,
    req: HttpRequest,
) -> HttpResponse {
    let origin = req.origin.clone();
    let (origin_ok, r) = cors(engine, origin.as_deref(), HttpResponse::default());
    if !origin_ok {
        return r;
    }
    let r = route(engine, routes, req).await;
    cors(engine, origin.as_deref(), r).1
}

/// Applies CORS to `r`: whether the origin is allowed, and the response (a 403 when not).
fn cors(engine: &WhepEngine, origin: Option<&str>, mut r: HttpResponse) -> (bool, HttpResponse) {
    let allowed = &engine.config().allowed_origins;
    let origin_ok = match origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a == o || a == "*"),
    };
    if !origin_ok {
        return (
            false,
            resp(
                403,
                Some("text/plain; charset=utf-8"),
                "origin not allowed\n",
            ),
        );
    }
    let acao = match (origin, allowed.is_empty()) {
        (Some(o), false) => o.to_string(),
        _ => "*".to_string(),
    };
    r.set("access-control-allow-origin", &acao);
    r.set(
        "access-control-expose-headers",
        "Location, ETag, Accept-Patch, Link, Retry-After",
    );
    if !allowed.is_empty() {
        r.set("vary", "Origin");
    }
    (true, r)
}

async fn route(engine: &WhepEngine, routes: Option<&Routes>, req: HttpRequest) -> HttpResponse {
    let path = req.path_only().to_string();
    let retry = engine.config().retry_after_s;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let whep = segs.first() == Some(&"whep") && (segs.len() == 2 || segs.len() == 3);
    let whip = segs.first() == Some(&"whip") && (segs.len() == 2 || segs.len() == 3);
    let method = req.method.as_str();
    if method == "OPTIONS" {
        let mut r = resp(204, None, Bytes::new());
        r.set(
            "access-control-allow-methods",
            "GET, POST, PATCH, DELETE, OPTIONS",
        );
        r.set(
            "access-control-allow-headers",
            "Authorization, Content-Type, If-Match",
        );
        r.set("access-control-max-age", "600");
        if whep || whip {
            r.set("accept-post", "application/sdp");
            r.set("accept-patch", "application/trickle-ice-sdpfrag");
        }
        return r;
    }
    if whip {
        return route_whip(engine, req, &segs, retry).await;
    }
    if !whep {
        // The host's routes see every method (its API takes POST and DELETE).
        if let Some(p) = routes.and_then(|r| r(&req)) {
            return resp(p.status, Some(p.content_type), p.body);
        }
        return resp(404, Some("text/plain"), "not found\n");
    }
    let stream = segs[1].to_string();
    if let Err(e) = engine.authorize_stream(req.authorization.as_deref(), &stream) {
        return error(&e, retry);
    }
    if matches!((method, segs.len()), ("POST", 2) | ("PATCH", 3))
        && (req.body_too_large || req.body.len() > MAX_BODY)
    {
        return resp(413, Some("text/plain"), "request body too large\n");
    }
    match (method, segs.len()) {
        ("POST", 2) => match engine
            .offer_from(&stream, req.content_type.as_deref(), &req.body, req.peer)
            .await
        {
            Ok(a) => created("whep", &stream, a),
            Err(e) => error(&e, retry),
        },
        ("PATCH", 3) => {
            let resource = segs[2];
            let r = engine
                .patch(
                    &stream,
                    resource,
                    req.content_type.as_deref(),
                    req.if_match.as_deref(),
                    &req.body,
                )
                .await;
            patched(r, retry)
        }
        ("DELETE", 3) => deleted(engine.delete(&stream, segs[2])),
        ("POST", _) | ("PATCH", _) | ("DELETE", _) | ("GET", _) => not_here(segs.len()),
        _ => resp(405, Some("text/plain"), "method not allowed\n"),
    }
}

/// `201` with the answer of an offer to `/PREFIX/NAME` and its resource's `Location`.
fn created(prefix: &str, name: &str, a: super::WhepAnswer) -> HttpResponse {
    let mut r = resp(201, Some("application/sdp"), a.sdp);
    r.set("location", &format!("/{prefix}/{name}/{}", a.resource));
    r.set("etag", &a.etag);
    r.set("accept-patch", "application/trickle-ice-sdpfrag");
    r
}

/// The answer to a PATCH (WHEP or WHIP).
fn patched(r: Result<PatchOutcome, WhepError>, retry: u32) -> HttpResponse {
    match r {
        Ok(PatchOutcome::Applied) => resp(204, None, Bytes::new()),
        Ok(PatchOutcome::Restarted { sdpfrag, etag }) => {
            let mut r = resp(200, Some("application/trickle-ice-sdpfrag"), sdpfrag);
            r.set("etag", &etag);
            r
        }
        Err(e) => error(&e, retry),
    }
}

/// The answer to a DELETE: idempotent, an unknown resource is already gone.
fn deleted(existed: bool) -> HttpResponse {
    resp(if existed { 200 } else { 204 }, None, Bytes::new())
}

/// 405 on `/PREFIX/NAME` (`segments` 2) or `/PREFIX/NAME/RESOURCE` (3), with `Allow`.
fn not_here(segments: usize) -> HttpResponse {
    let mut r = resp(405, Some("text/plain"), "method not allowed here\n");
    r.set(
        "allow",
        if segments == 2 {
            "POST, OPTIONS"
        } else {
            "PATCH, DELETE, OPTIONS"
        },
    );
    r
}

/// `/whip/KEY` (POST an offer) and `/whip/KEY/RESOURCE` (PATCH, DELETE): the publisher's
/// bearer token is its key's credential, checked by the engine's push gate.
async fn route_whip(
    engine: &WhepEngine,
    req: HttpRequest,
    segs: &[&str],
    retry: u32,
) -> HttpResponse {
    let key = segs[1];
    let too_large = req.body_too_large || req.body.len() > MAX_BODY;
    match (req.method.as_str(), segs.len()) {
        ("POST", 2) | ("PATCH", 3) if too_large => {
            resp(413, Some("text/plain"), "request body too large\n")
        }
        ("POST", 2) => match engine
            .publish_from(
                key,
                req.authorization.as_deref(),
                req.content_type.as_deref(),
                &req.body,
                req.peer,
            )
            .await
        {
            Ok(a) => created("whip", key, a),
            Err(e) => error(&e, retry),
        },
        ("PATCH", 3) => {
            let r = engine
                .patch_publisher(
                    key,
                    segs[2],
                    req.content_type.as_deref(),
                    req.if_match.as_deref(),
                    &req.body,
                )
                .await;
            patched(r, retry)
        }
        ("DELETE", 3) => deleted(engine.unpublish(key, segs[2])),
        (_, n) => not_here(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WhepConfig;

    fn engine(token: Option<&str>, origins: &[&str]) -> WhepEngine {
        WhepEngine::new(WhepConfig {
            root: Some(std::env::temp_dir().join(format!("fc-whep-http-{}", std::process::id()))),
            token: token.map(String::from),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..WhepConfig::default()
        })
        .unwrap()
    }

    fn req(method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            ..HttpRequest::default()
        }
    }

    fn run(e: &WhepEngine, r: HttpRequest) -> HttpResponse {
        let routes: Routes = Arc::new(|r: &HttpRequest| {
            (r.path == "/health?x=1").then(|| Page {
                status: 200,
                content_type: "text/plain",
                body: b"ok".to_vec(),
            })
        });
        e.handle()
            .block_on(async { respond(e, Some(&routes), r).await })
    }

    #[test]
    fn routing_methods_and_limits_without_a_server() {
        let e = engine(None, &[]);
        let r = run(&e, req("OPTIONS", "/whep/cam"));
        assert_eq!(r.status, 204);
        assert_eq!(r.header("accept-post"), Some("application/sdp"));
        assert_eq!(
            r.header("Accept-Patch"),
            Some("application/trickle-ice-sdpfrag")
        );
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let r = run(&e, req("GET", "/health?x=1"));
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"ok"[..]),
            "extra routes see the query"
        );
        assert_eq!(run(&e, req("GET", "/nothing")).status, 404);
        assert_eq!(run(&e, req("POST", "/nothing")).status, 404);
        let r = run(&e, req("GET", "/whep/cam"));
        assert_eq!((r.status, r.header("allow")), (405, Some("POST, OPTIONS")));
        let r = run(&e, req("POST", "/whep/cam/res"));
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("PATCH, DELETE, OPTIONS"))
        );
        assert_eq!(run(&e, req("PUT", "/whep/cam")).status, 405);
        // DELETE is idempotent: an unknown resource is already gone.
        assert_eq!(run(&e, req("DELETE", "/whep/cam/nope")).status, 204);
        // A body over the limit: 413, whether a server stopped reading it or a C host passed
        // it whole.
        let mut big = req("POST", "/whep/cam");
        big.body_too_large = true;
        assert_eq!(run(&e, big).status, 413);
        let mut big = req("POST", "/whep/cam");
        big.body = Bytes::from(vec![b'v'; MAX_BODY + 1]);
        assert_eq!(run(&e, big).status, 413);
        // An offer that is no SDP is refused by the engine, not by the HTTP layer.
        let mut bad = req("POST", "/whep/cam");
        bad.content_type = Some("application/sdp".into());
        bad.body = Bytes::from_static(b"not sdp");
        assert!((400..500).contains(&run(&e, bad).status));
    }

    #[test]
    fn authorization_and_origins() {
        let e = engine(Some("s3cret"), &["https://ok.example"]);
        let mut r = req("POST", "/whep/cam");
        r.body_too_large = true;
        let out = run(&e, r.clone());
        assert_eq!(out.status, 401, "authorization is checked before the body");
        assert_eq!(out.header("www-authenticate"), Some("Bearer"));
        r.authorization = Some("Bearer s3cret".into());
        assert_eq!(run(&e, r.clone()).status, 413);
        r.origin = Some("https://evil.example".into());
        let out = run(&e, r.clone());
        assert_eq!(out.status, 403);
        assert_eq!(out.header("access-control-allow-origin"), None);
        r.origin = Some("https://ok.example".into());
        let out = run(&e, r);
        assert_eq!(
            out.header("access-control-allow-origin"),
            Some("https://ok.example")
        );
        assert_eq!(out.header("vary"), Some("Origin"));
    }

    #[test]
    fn requests_an_http_parser_would_refuse() {
        assert!(req("POST", "/whep/cam").validate().is_ok());
        assert!(req("BAD METHOD", "/whep/cam").validate().is_err());
        assert!(req("", "/whep/cam").validate().is_err());
        assert!(req("POST", "whep/cam").validate().is_err());
        assert!(req("POST", "/whep/ca m").validate().is_err());
        assert!(req("POST", "/whep/cam\r\nX: y").validate().is_err());
    }
}
