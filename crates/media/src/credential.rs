//! Secrets in requests: constant-time comparison and the `Authorization: Bearer` value. The
//! WHEP engine, RTMP play and `serve`'s API check viewer tokens with these.

/// Whether `given` equals `secret`, in time that depends only on their lengths (a token is a
/// secret: a compare that stops at the first difference tells an attacker how much matched).
pub fn secret_eq(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The token of an `Authorization: Bearer TOKEN` header value (scheme case-insensitive).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, v) = authorization?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(v.trim())
}

/// Whether a request that presents `given` may see a resource open to any of `accepted`
/// (`None` entries are ignored). With no accepted token at all the resource is open.
pub fn admits(given: Option<&str>, accepted: &[Option<&str>]) -> bool {
    let mut any = false;
    let mut ok = false;
    for t in accepted.iter().flatten() {
        any = true;
        // Every candidate is compared (no early exit): the time says nothing of which matched.
        ok |= given.is_some_and(|g| secret_eq(g, t));
    }
    !any || ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_parses() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abd", "abc"));
        assert!(!secret_eq("ab", "abc"));
        assert_eq!(bearer(Some("Bearer xyz")), Some("xyz"));
        assert_eq!(bearer(Some("bearer  xyz ")), Some("xyz"));
        assert_eq!(bearer(Some("Basic xyz")), None);
        assert_eq!(bearer(None), None);
        assert!(admits(None, &[None, None]), "nothing configured: open");
        assert!(!admits(None, &[Some("g"), None]));
        assert!(admits(Some("g"), &[Some("g"), Some("s")]));
        assert!(admits(Some("s"), &[Some("g"), Some("s")]));
        assert!(!admits(Some("x"), &[Some("g"), Some("s")]));
        assert!(admits(Some("s"), &[None, Some("s")]));
    }
}
