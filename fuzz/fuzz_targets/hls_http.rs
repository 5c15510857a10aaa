//! Fuzzes what an HLS server sends: the HTTP response framing (status, chunked bodies), the
//! playlist parser and the resolution of every entry against the playlist URL. Never a panic;
//! a resolved entry stays on the playlist's scheme, host and port and never climbs with "..".
#![no_main]

use framecache_ingest::http::{parse_http, parse_response};
use framecache_ingest::pull::resolve_uri;
use framecache_media::hls::parse_playlist;
use libfuzzer_sys::fuzz_target;

const BASE: &str = "https://media.example:8443/live/index.m3u8";

fuzz_target!(|data: &[u8]| {
    let body = parse_response(BASE, data).unwrap_or_else(|_| data.to_vec());
    let Ok(p) = parse_playlist(&String::from_utf8_lossy(&body)) else { return };
    let base = parse_http(BASE).unwrap();
    for uri in p.variants.iter().chain(p.segments.iter().flat_map(|s| std::iter::once(&s.uri).chain(&s.map))) {
        if let Ok(full) = resolve_uri(BASE, uri) {
            let u = parse_http(&full).expect("a resolved entry parses");
            assert_eq!((u.tls, &u.host, u.port), (base.tls, &base.host, base.port), "{uri:?}");
            assert!(!u.path.split('?').next().unwrap().split('/').any(|c| c == ".."), "{uri:?}");
        }
    }
});
