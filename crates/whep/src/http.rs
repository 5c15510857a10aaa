//! The built-in HTTP server for WHEP (hyper, HTTP/1.1): the WHEP endpoints with CORS, plus
//! whatever extra routes the host adds (`framecache serve` adds its page, `/metrics` and
//! `/health`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN};
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

/// Extra GET routes: given the path (with query), a page or `None` for 404.
pub type Routes = Arc<dyn Fn(&str) -> Option<Page> + Send + Sync>;

/// A response of [`handle`].
pub type Resp = Response<Full<Bytes>>;

fn resp(status: u16, ct: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = ct {
        if let Ok(v) = HeaderValue::from_str(ct) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
    }
    r
}

fn set(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn error(e: &WhepError, retry_after: u32) -> Resp {
    let mut r = resp(
        e.status(),
        Some("text/plain; charset=utf-8"),
        format!("{e}\n"),
    );
    if e.retry_later() {
        set(&mut r, "retry-after", &retry_after.to_string());
    }
    if matches!(e, WhepError::Unauthorized) {
        set(&mut r, "www-authenticate", "Bearer");
    }
    r
}

/// Serves `engine` (and `routes`) on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, engine: WhepEngine, routes: Option<Routes>) {
    loop {
        let (sock, _) = match listener.accept().await {
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
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let engine = engine.clone();
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(handle(&engine, routes.as_ref(), req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(sock), svc);
            let _ = conn.await;
        });
    }
}

/// Handles one request (public so a host with its own HTTP server can call it; `fc_whep_handle`
/// does, with the request a C host forwards).
pub async fn handle<B>(engine: &WhepEngine, routes: Option<&Routes>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allowed = &engine.config().allowed_origins;
    let origin_ok = match &origin {
        None => true,
        Some(o) => allowed.is_empty() || allowed.iter().any(|a| a == o || a == "*"),
    };
    let mut r = if !origin_ok {
        resp(
            403,
            Some("text/plain; charset=utf-8"),
            "origin not allowed\n",
        )
    } else {
        route(engine, routes, req).await
    };
    if origin_ok {
        let acao = match (&origin, allowed.is_empty()) {
            (Some(o), false) => o.clone(),
            _ => "*".to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&acao) {
            r.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        set(
            &mut r,
            "access-control-expose-headers",
            "Location, ETag, Accept-Patch, Link, Retry-After",
        );
        if !allowed.is_empty() {
            set(&mut r, "vary", "Origin");
        }
    }
    r
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn body<B>(req: Request<B>) -> Result<Bytes, Resp>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(resp(413, Some("text/plain"), "request body too large\n"))
            } else {
                Err(resp(
                    400,
                    Some("text/plain"),
                    "request body could not be read\n",
                ))
            }
        }
    }
}

async fn route<B>(engine: &WhepEngine, routes: Option<&Routes>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    let retry = engine.config().retry_after_s;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let whep = segs.first() == Some(&"whep") && (segs.len() == 2 || segs.len() == 3);
    if req.method() == Method::OPTIONS {
        let mut r = resp(204, None, Bytes::new());
        set(
            &mut r,
            "access-control-allow-methods",
            "GET, POST, PATCH, DELETE, OPTIONS",
        );
        set(
            &mut r,
            "access-control-allow-headers",
            "Authorization, Content-Type, If-Match",
        );
        set(&mut r, "access-control-max-age", "600");
        if whep {
            set(&mut r, "accept-post", "application/sdp");
            set(&mut r, "accept-patch", "application/trickle-ice-sdpfrag");
        }
        return r;
    }
    if !whep {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or(path);
            if let Some(p) = routes.and_then(|r| r(&pq)) {
                return resp(p.status, Some(p.content_type), p.body);
            }
        }
        return resp(404, Some("text/plain"), "not found\n");
    }
    if let Err(e) = engine.authorize(header(&req, "authorization")) {
        return error(&e, retry);
    }
    let stream = segs[1].to_string();
    match (req.method().clone(), segs.len()) {
        (Method::POST, 2) => {
            let ct = header(&req, "content-type").map(str::to_string);
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match engine.offer(&stream, ct.as_deref(), &b).await {
                Ok(a) => {
                    let mut r = resp(201, Some("application/sdp"), a.sdp);
                    set(
                        &mut r,
                        "location",
                        &format!("/whep/{stream}/{}", a.resource),
                    );
                    set(&mut r, "etag", &a.etag);
                    set(&mut r, "accept-patch", "application/trickle-ice-sdpfrag");
                    r
                }
                Err(e) => error(&e, retry),
            }
        }
        (Method::PATCH, 3) => {
            let resource = segs[2].to_string();
            let ct = header(&req, "content-type").map(str::to_string);
            let im = header(&req, "if-match").map(str::to_string);
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match engine
                .patch(&stream, &resource, ct.as_deref(), im.as_deref(), &b)
                .await
            {
                Ok(PatchOutcome::Applied) => resp(204, None, Bytes::new()),
                Ok(PatchOutcome::Restarted { sdpfrag, etag }) => {
                    let mut r = resp(200, Some("application/trickle-ice-sdpfrag"), sdpfrag);
                    set(&mut r, "etag", &etag);
                    r
                }
                Err(e) => error(&e, retry),
            }
        }
        (Method::DELETE, 3) => {
            // Idempotent: an unknown resource is already gone.
            if engine.delete(&stream, segs[2]) {
                resp(200, None, Bytes::new())
            } else {
                resp(204, None, Bytes::new())
            }
        }
        (Method::POST, _) | (Method::PATCH, _) | (Method::DELETE, _) | (Method::GET, _) => {
            let mut r = resp(405, Some("text/plain"), "method not allowed here\n");
            set(
                &mut r,
                "allow",
                if segs.len() == 2 {
                    "POST, OPTIONS"
                } else {
                    "PATCH, DELETE, OPTIONS"
                },
            );
            r
        }
        _ => resp(405, Some("text/plain"), "method not allowed\n"),
    }
}
