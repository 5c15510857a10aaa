//! What the engine needs to read from WHEP offers and trickle fragments (RFC 8866 lines; the
//! full SDP is handed to the WebRTC stack afterwards).

/// An offered RTP payload type with its `a=rtpmap` and `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written (`H264`, `opus`).
    pub name: String,
    /// Clock rate.
    pub clock: u32,
    /// `a=fmtp` parameters, or empty.
    pub fmtp: String,
}

/// The media sections of an offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Codecs of the first video section that is usable (not `a=inactive`, nor one-way in
    /// the wrong direction).
    pub video: Vec<OfferedCodec>,
    /// Codecs of the first audio section likewise.
    pub audio: Vec<OfferedCodec>,
    /// Whether the offer has a video section at all.
    pub has_video: bool,
    /// Whether the offer has an audio section at all.
    pub has_audio: bool,
}

/// Parses a viewer's offer far enough to choose codecs (sections the viewer only sends from
/// are not usable). `Err` says why the body is not an SDP offer.
pub fn parse_offer(sdp: &str) -> Result<Offer, String> {
    parse(sdp, "a=sendonly")
}

/// Parses a WHIP publisher's offer likewise (sections it only receives on are not usable).
pub fn parse_publish_offer(sdp: &str) -> Result<Offer, String> {
    parse(sdp, "a=recvonly")
}

fn parse(sdp: &str, unusable: &str) -> Result<Offer, String> {
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    match lines.next() {
        Some("v=0") => {}
        _ => return Err("the body is not an SDP session description (no v=0)".into()),
    }
    let mut offer = Offer::default();
    // (kind, codecs, usable)
    let mut sections: Vec<(String, Vec<OfferedCodec>, bool)> = Vec::new();
    for l in lines {
        if let Some(m) = l.strip_prefix("m=") {
            let kind = m.split(' ').next().unwrap_or("").to_string();
            let pts: Vec<OfferedCodec> = m
                .split(' ')
                .skip(3)
                .filter_map(|p| p.parse::<u8>().ok())
                .map(|pt| OfferedCodec {
                    pt,
                    name: String::new(),
                    clock: 0,
                    fmtp: String::new(),
                })
                .collect();
            sections.push((kind, pts, true));
            continue;
        }
        let Some((_, codecs, usable)) = sections.last_mut() else {
            continue;
        };
        if l == "a=inactive" || l == unusable {
            *usable = false;
        } else if let Some(r) = l.strip_prefix("a=rtpmap:") {
            let (pt, rest) = r.split_once(' ').unwrap_or((r, ""));
            let mut it = rest.split('/');
            let name = it.next().unwrap_or("").to_string();
            let clock = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            if let Some(c) = pt
                .parse::<u8>()
                .ok()
                .and_then(|pt| codecs.iter_mut().find(|c| c.pt == pt))
            {
                c.name = name;
                c.clock = clock;
            }
        } else if let Some(r) = l.strip_prefix("a=fmtp:") {
            let (pt, rest) = r.split_once(' ').unwrap_or((r, ""));
            if let Some(c) = pt
                .parse::<u8>()
                .ok()
                .and_then(|pt| codecs.iter_mut().find(|c| c.pt == pt))
            {
                c.fmtp = rest.trim().to_string();
            }
        }
    }
    if sections.is_empty() {
        return Err("the offer has no media section".into());
    }
    for (kind, codecs, usable) in sections {
        match kind.as_str() {
            "video" => {
                offer.has_video = true;
                if usable && offer.video.is_empty() {
                    offer.video = codecs;
                }
            }
            "audio" => {
                offer.has_audio = true;
                if usable && offer.audio.is_empty() {
                    offer.audio = codecs;
                }
            }
            _ => {}
        }
    }
    Ok(offer)
}

fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

/// Chooses the offered H.264 payload type to send `source_plid` (the source's
/// profile-level-id) with: packetization-mode=1 is required (WebRTC's non-interleaved mode);
/// among those, the same profile is preferred, then constrained baseline (which every
/// receiver decodes). `None` when the offer has no usable H.264.
pub fn choose_h264(offer: &Offer, source_plid: Option<&str>) -> Option<OfferedCodec> {
    let h264: Vec<&OfferedCodec> = offer
        .video
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("H264") && c.clock == 90000)
        .filter(|c| fmtp_param(&c.fmtp, "packetization-mode") == Some("1"))
        .collect();
    let profile = |c: &OfferedCodec| {
        fmtp_param(&c.fmtp, "profile-level-id")
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_else(|| "42001f".into())
    };
    if let Some(src) = source_plid {
        // Same profile_idc and constraint byte; the level may differ
        // (level-asymmetry-allowed).
        let src = src.to_ascii_lowercase();
        if let Some(c) = h264.iter().find(|c| profile(c).get(..4) == src.get(..4)) {
            return Some((*c).clone());
        }
    }
    h264.iter()
        .find(|c| profile(c).starts_with("42e0"))
        .or_else(|| h264.first())
        .map(|c| (*c).clone())
}

/// The offered Opus payload type.
pub fn choose_opus(offer: &Offer) -> Option<OfferedCodec> {
    offer
        .audio
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("opus") && c.clock == 48000)
        .cloned()
}

/// A parsed `application/trickle-ice-sdpfrag` body (RFC 8840).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, if present.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub pwd: Option<String>,
    /// `(mid, candidate-attribute)` pairs; mid is the last `a=mid` seen before the line.
    pub candidates: Vec<(Option<String>, String)>,
    /// Whether `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Parses a trickle fragment. Any line that is not an attribute or a media line is an error.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFrag, String> {
    let mut f = SdpFrag::default();
    let mut mid = None;
    for l in body.lines().map(|l| l.trim_end_matches('\r')) {
        if l.is_empty() || l.starts_with("m=") || l.starts_with("c=") {
            continue;
        }
        let Some(a) = l.strip_prefix("a=") else {
            return Err(format!("unexpected line in an sdpfrag: {l:.40}"));
        };
        if let Some(v) = a.strip_prefix("ice-ufrag:") {
            f.ufrag = Some(v.trim().to_string());
        } else if let Some(v) = a.strip_prefix("ice-pwd:") {
            f.pwd = Some(v.trim().to_string());
        } else if let Some(v) = a.strip_prefix("mid:") {
            mid = Some(v.trim().to_string());
        } else if a.starts_with("candidate:") {
            f.candidates.push((mid.clone(), a.to_string()));
        } else if a == "end-of-candidates" {
            f.end_of_candidates = true;
        }
    }
    Ok(f)
}

/// The `a=ice-ufrag` of a full session description.
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .map(|s| s.trim().to_string())
}

/// Replaces every `a=ice-ufrag` and `a=ice-pwd` of a session description (for an ICE
/// restart: the client's new credentials applied to its previous offer).
pub fn with_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    for l in sdp.lines() {
        let t = l.trim_end_matches('\r');
        if t.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if t.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if t.starts_with("a=candidate:") || t == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(t);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 104 106\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
        a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n";

    #[test]
    fn codecs_are_chosen_by_packetization_mode_and_profile() {
        let o = parse_offer(CHROME_LIKE).unwrap();
        assert!(o.has_audio && o.has_video);
        assert_eq!(choose_opus(&o).unwrap().pt, 111);
        // Main profile source → the main-profile payload type.
        assert_eq!(choose_h264(&o, Some("4d0028")).unwrap().pt, 106);
        // High profile source, not offered → constrained baseline.
        assert_eq!(choose_h264(&o, Some("640028")).unwrap().pt, 104);
        assert_eq!(choose_h264(&o, None).unwrap().pt, 104);
    }

    #[test]
    fn offers_without_h264_or_opus_have_no_choice() {
        let vp8_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        let o = parse_offer(vp8_only).unwrap();
        assert!(choose_h264(&o, None).is_none());
        assert!(choose_opus(&o).is_none());
        let mode0 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
            a=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(choose_h264(&parse_offer(mode0).unwrap(), None).is_none());
    }

    #[test]
    fn garbage_is_not_an_offer() {
        assert!(parse_offer("").is_err());
        assert!(parse_offer("hello").is_err());
        assert!(parse_offer("v=0\r\ns=-\r\n").is_err());
        assert!(parse_offer("v=0\nm=\na=rtpmap:\na=fmtp:x\n").is_ok());
        let mut s = String::from("v=0\r\n");
        for i in 0..1000 {
            s.push_str(&format!("m=video 9 X {i}\r\na=rtpmap:{i} H264/x\r\n"));
        }
        assert!(parse_offer(&s).is_ok());
    }

    #[test]
    fn trickle_fragments_are_parsed() {
        let f = parse_sdpfrag(
            "a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(f.pwd.as_deref(), Some("secret"));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].0.as_deref(), Some("0"));
        assert!(f.end_of_candidates);
        assert!(parse_sdpfrag("not sdp").is_err());
    }

    #[test]
    fn ice_credentials_are_replaced() {
        let s = "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpw\r\na=candidate:x\r\nm=audio 9 X 0\r\n";
        let n = with_ice_credentials(s, "new", "newpw");
        assert_eq!(ice_ufrag(&n).as_deref(), Some("new"));
        assert!(n.contains("a=ice-pwd:newpw") && !n.contains("candidate"));
    }
}
