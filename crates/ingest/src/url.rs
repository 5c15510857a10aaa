//! The one URL parser of the ingest engine: `scheme://rest?query`, with the query split into
//! percent-decoded pairs. [`crate::engine::Endpoint`] (listeners, keys) and
//! [`crate::pull::InputUrl`] (pull inputs) both read URLs through it.

use framecache_shm::error::{Error, Result};

/// A URL split into its scheme, the part before the query, and the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    /// The text as given (for messages).
    pub text: &'a str,
    /// Scheme, before `://`.
    pub scheme: &'a str,
    /// Authority and path, between `://` and `?`.
    pub rest: &'a str,
    /// Query pairs in order, values percent-decoded (`k` alone gives an empty value).
    pub query: Vec<(String, String)>,
}

impl<'a> Url<'a> {
    /// Splits `text`; a URL without `://` is [`Error::BadUrl`].
    pub fn parse(text: &'a str) -> Result<Url<'a>> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| Error::BadUrl(format!("{text}: no scheme")))?;
        let (rest, q) = rest.split_once('?').unwrap_or((rest, ""));
        let query = q
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), percent_decode(v)),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        Ok(Url {
            text,
            scheme,
            rest,
            query,
        })
    }

    /// The value of query parameter `name` (the first, if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `rest` without a trailing `/`.
    pub fn trimmed(&self) -> &'a str {
        self.rest.trim_end_matches('/')
    }

    /// A [`Error::BadUrl`] naming this URL (its password left out) and `why`.
    pub fn bad(&self, why: &str) -> Error {
        Error::BadUrl(format!("{}: {why}", redact(self.text)))
    }
}

/// Query keys whose values are secrets (SRT passphrases, viewer tokens).
const SECRET_KEYS: [&str; 5] = ["passphrase", "token", "password", "pwd", "secret"];

/// `text` with the password of its user info and the values of secret query keys
/// (`passphrase`, `token`, ...) replaced by `***`, for messages.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((ui, hp)) => {
            let user = ui.split(':').next().unwrap_or("");
            format!("{user}:***@{hp}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `%XX` escapes decoded; malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(redact("rtsp://u:pw@h:1/p?q=1"), "rtsp://u:***@h:1/p?q=1");
        assert_eq!(
            redact("rtsp://h/p@x"),
            "rtsp://h/p@x",
            "an @ in the path is not user info"
        );
        assert_eq!(redact("plain"), "plain");
        assert_eq!(
            redact("srt://h:1?streamid=a&passphrase=s3cret-pass&latency=400"),
            "srt://h:1?streamid=a&passphrase=***&latency=400"
        );
        assert_eq!(
            redact("rtmp://u:p@h/live/cam1?token=abc"),
            "rtmp://u:***@h/live/cam1?token=***"
        );
    }

    #[test]
    fn splits_and_decodes() {
        let u =
            Url::parse("srt://0.0.0.0:9000/?mode=listener&streamid=%23!%3A%3Ar%3Dcam&x").unwrap();
        assert_eq!(
            (u.scheme, u.rest, u.trimmed()),
            ("srt", "0.0.0.0:9000/", "0.0.0.0:9000")
        );
        assert_eq!(u.get("mode"), Some("listener"));
        assert_eq!(u.get("streamid"), Some("#!::r=cam"));
        assert_eq!(u.get("x"), Some(""));
        assert_eq!(u.get("y"), None);
        assert!(Url::parse("no-scheme").is_err());
        assert_eq!(percent_decode("a%2"), "a%2", "a cut escape stays");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
