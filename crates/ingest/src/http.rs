//! A small HTTP/1.1 GET client for HLS pulls: plain TCP for `http://`, rustls for `https://`
//! (certificates checked against the system store, or `$SSL_CERT_FILE` / `$SSL_CERT_DIR`).
//! Blocking, one request per connection, bounded size and time.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use framecache_shm::error::{Error, Result};

/// Largest playlist or segment accepted.
pub(crate) const HTTP_MAX: usize = 64 << 20;

/// The parts of an `http://` or `https://` URL a GET needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https`?
    pub tls: bool,
    /// Host name or address (no brackets).
    pub host: String,
    /// Port (default 80 or 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// `scheme://host:port`, for resolving relative references.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// Splits an `http://` or `https://` URL.
pub fn parse_http(url: &str) -> Result<HttpUrl> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(Error::BadUrl(format!(
            "{url}: only http:// and https:// are supported"
        )));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse()
                .map_err(|_| Error::BadUrl(format!("{url}: bad port")))?,
        ),
        None => (hostport.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(Error::BadUrl(format!("{url}: no host")));
    }
    Ok(HttpUrl {
        tls,
        host,
        port,
        path: path.to_string(),
    })
}

/// The client configuration for `https://`: the system's roots, built once. A store that
/// fails to load is an error at the first https request, not a panic.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<std::result::Result<Arc<rustls::ClientConfig>, String>> =
        OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted certificates found (system store or $SSL_CERT_FILE): {:?}",
                    found.errors
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::Protocol(format!("TLS: {e}")))
}

/// GETs `url` (`http://` or `https://`), each step bounded by `timeout`; the body of a 200
/// answer (chunked or not), at most [`HTTP_MAX`] bytes.
pub fn http_get(url: &str, timeout: Duration) -> Result<Vec<u8>> {
    let u = parse_http(url)?;
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::BadUrl(format!("{url}: host not found")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // The port only when it is not the scheme's default (some servers refuse "host:443").
    let host = if u.port == if u.tls { 443 } else { 80 } {
        u.host.clone()
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: framecache/{}\r\nConnection: close\r\n\r\n",
        u.path,
        env!("CARGO_PKG_VERSION")
    );
    let limit = HTTP_MAX as u64 + 65536;
    let mut data = Vec::new();
    if u.tls {
        let name = rustls::pki_types::ServerName::try_from(u.host.clone())
            .map_err(|_| Error::BadUrl(format!("{url}: bad host name for TLS")))?;
        let conn = rustls::ClientConnection::new(tls_config()?, name)
            .map_err(|e| Error::Protocol(format!("{url}: TLS: {e}")))?;
        let mut tls = rustls::StreamOwned::new(conn, s);
        exchange(&mut tls, &request, limit, &mut data).map_err(|e| tls_error(url, e))?;
    } else {
        exchange(&mut s, &request, limit, &mut data)?;
    }
    parse_response(url, &data)
}

/// The body of a complete HTTP/1.1 response in `data` (the server closed after it): a 200 with
/// a plain or chunked body of at most [`HTTP_MAX`] bytes; anything else is an error. Sans-IO,
/// for hostile bytes.
pub fn parse_response(url: &str, data: &[u8]) -> Result<Vec<u8>> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Protocol(format!("{url}: no HTTP header")))?;
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("{url}: bad status line {status:?}")))?;
    if code != 200 {
        return Err(Error::Protocol(format!("{url}: HTTP {code}")));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = data[end + 4..].to_vec();
    if body.len() > HTTP_MAX {
        return Err(Error::Protocol(format!("{url}: response too large")));
    }
    if chunked {
        return dechunk(&body).ok_or_else(|| Error::Protocol(format!("{url}: bad chunked body")));
    }
    Ok(body)
}

/// Sends the request and reads the answer until the server closes (at most `limit` bytes).
fn exchange<S: Read + Write>(
    s: &mut S,
    request: &str,
    limit: u64,
    data: &mut Vec<u8>,
) -> std::io::Result<()> {
    s.write_all(request.as_bytes())?;
    s.flush()?;
    match s.take(limit).read_to_end(data) {
        // Servers that close without TLS close_notify (common) end the body all the same.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !data.is_empty() => Ok(()),
        r => r.map(|_| ()),
    }
}

/// A TLS failure with its reason (an untrusted certificate, a wrong host name) in the text.
pub(crate) fn tls_error(url: &str, e: std::io::Error) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => Error::Protocol(format!("{url}: TLS: {t}")),
        None => Error::Io(e),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body; `None` if it is malformed or cut short.
pub fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_txt = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_with_default_ports() {
        let u = parse_http("https://example.org/live/a.m3u8?x=1").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                tls: true,
                host: "example.org".into(),
                port: 443,
                path: "/live/a.m3u8?x=1".into()
            }
        );
        assert_eq!(u.origin(), "https://example.org:443");
        let u = parse_http("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8080, "/"));
        for bad in ["ftp://x/", "https://:1/a", "http://h:port/", "https//x"] {
            assert!(parse_http(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_decode_or_fail() {
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
        assert!(dechunk(b"ff\r\nabc").is_none());
        assert!(dechunk(b"zz\r\n").is_none());
    }
}
