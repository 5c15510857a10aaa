//! HLS playlists (M3U8), parsed; fetching them is the ingest engine's.

use std::time::Duration;

use framecache_shm::{Error, Result};

/// One media segment of a playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number.
    pub seq: u64,
    /// The segment's URI, as written.
    pub uri: String,
    /// The URI of the init segment in effect (`#EXT-X-MAP`): the segment is fragmented MP4.
    /// `None`: MPEG-TS.
    pub map: Option<String>,
}

/// A parsed playlist: media segments or variant streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    /// Variant stream URIs (a master playlist).
    pub variants: Vec<String>,
    /// Media segments, in order.
    pub segments: Vec<Segment>,
    /// `#EXT-X-TARGETDURATION`, clamped to 0.1..=60 s (default 2 s).
    pub target: Duration,
    /// `#EXT-X-ENDLIST` seen.
    pub ended: bool,
}

/// The value of attribute `name` in an attribute list (`A=1,URI="x,y"`), unquoted.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(|c| c != ','))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        if key == name {
            return Some(value);
        }
        rest = next.strip_prefix(',').unwrap_or(next);
    }
    None
}

/// Parses an M3U8 playlist (hostile input: never panics). What framecache cannot read is
/// refused with its reason: byte ranges (`#EXT-X-BYTERANGE`, `BYTERANGE` of a map) and
/// encryption (`#EXT-X-KEY` other than `NONE`).
pub fn parse_playlist(text: &str) -> Result<Playlist> {
    if !text.trim_start().starts_with("#EXTM3U") {
        return Err(Error::Protocol("not an M3U8 playlist".into()));
    }
    let mut p = Playlist {
        variants: Vec::new(),
        segments: Vec::new(),
        target: Duration::from_secs(2),
        ended: false,
    };
    let mut seq = 0u64;
    let mut map = None;
    let mut next_is_variant = false;
    let refuse = |what: &str| Err(Error::Protocol(format!("HLS {what} is not supported")));
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            if let Ok(s) = v.trim().parse::<f64>() {
                p.target = Duration::from_secs_f64(s.clamp(0.1, 60.0));
            }
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            next_is_variant = true;
        } else if line.starts_with("#EXT-X-ENDLIST") {
            p.ended = true;
        } else if let Some(a) = line.strip_prefix("#EXT-X-MAP:") {
            if attribute(a, "BYTERANGE").is_some() {
                return refuse("EXT-X-MAP with BYTERANGE");
            }
            match attribute(a, "URI") {
                Some(u) if !u.is_empty() => map = Some(u.to_string()),
                _ => return Err(Error::Protocol("HLS EXT-X-MAP without a URI".into())),
            }
        } else if line.starts_with("#EXT-X-BYTERANGE") {
            return refuse("EXT-X-BYTERANGE");
        } else if let Some(a) = line.strip_prefix("#EXT-X-KEY:") {
            if attribute(a, "METHOD") != Some("NONE") {
                return refuse("encryption (EXT-X-KEY)");
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            if next_is_variant {
                p.variants.push(line.to_string());
                next_is_variant = false;
            } else {
                p.segments.push(Segment {
                    seq,
                    uri: line.to_string(),
                    map: map.clone(),
                });
                seq = seq.wrapping_add(1);
            }
        }
    }
    Ok(p)
}
