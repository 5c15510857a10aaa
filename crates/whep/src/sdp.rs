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

/// An H.264 profile as RFC 6184 §8.1 names it from `profile_idc` and the constraint flags
/// of a `profile-level-id`, for deciding what a receiver decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    /// Constrained Baseline (42 with constraint_set1, 4d with set1, 58 with set0 and set1).
    ConstrainedBaseline,
    /// Baseline without the constraint (may use FMO/ASO).
    Baseline,
    /// Main.
    Main,
    /// Extended.
    Extended,
    /// Constrained High (64 with constraint_set4 and set5).
    ConstrainedHigh,
    /// High.
    High,
    /// Anything else: High 10, High 4:2:2, High 4:4:4 Predictive…, with its `profile_idc`.
    Other(u8),
}

impl H264Profile {
    /// The profile of a 6-hex-digit `profile-level-id`; `None` if it is not one.
    pub fn of(plid: &str) -> Option<H264Profile> {
        let b = u32::from_str_radix(plid.get(..6)?, 16).ok()?;
        let (idc, flags) = ((b >> 16) as u8, (b >> 8) as u8);
        let set = |n: u8| flags & (0x80 >> n) != 0;
        Some(match idc {
            0x42 if set(1) => H264Profile::ConstrainedBaseline,
            0x4d if set(1) => H264Profile::ConstrainedBaseline,
            0x58 if set(0) && set(1) => H264Profile::ConstrainedBaseline,
            0x42 => H264Profile::Baseline,
            0x4d => H264Profile::Main,
            0x58 => H264Profile::Extended,
            0x64 if set(4) && set(5) => H264Profile::ConstrainedHigh,
            0x64 => H264Profile::High,
            other => H264Profile::Other(other),
        })
    }

    /// The profile's name, as H.264 Annex A gives it.
    pub fn name(self) -> String {
        use H264Profile::*;
        match self {
            ConstrainedBaseline => "Constrained Baseline".into(),
            Baseline => "Baseline".into(),
            Main => "Main".into(),
            Extended => "Extended".into(),
            ConstrainedHigh => "Constrained High".into(),
            High => "High".into(),
            Other(0x6e) => "High 10".into(),
            Other(0x7a) => "High 4:2:2".into(),
            Other(0xf4) => "High 4:4:4 Predictive".into(),
            Other(0x2c) => "CAVLC 4:4:4 Intra".into(),
            Other(n) => format!("profile_idc {n}"),
        }
    }

    /// Whether a decoder of profile `self` decodes a stream of profile `stream`: the subset
    /// relations of H.264 Annex A. Constrained Baseline is in every other profile; Main and
    /// Constrained High are in High; High, High 10, High 4:2:2 and High 4:4:4 Predictive
    /// each contain the ones before (a High 4:4:4 decoder also decodes CAVLC 4:4:4 Intra).
    /// Chromium offers High 4:4:4 Predictive instead of High, and decodes High 10 with it
    /// (measured: Chromium 156, 479 of 481 frames).
    pub fn decodes(self, stream: H264Profile) -> bool {
        use H264Profile::*;
        let high_rank = |p| match p {
            High => Some(2),
            Other(0x6e) => Some(3),
            Other(0x7a) => Some(4),
            Other(0xf4) => Some(5),
            _ => None,
        };
        let known = !matches!(self, Other(_)) || high_rank(self).is_some();
        self == stream
            || (stream == ConstrainedBaseline && known)
            || (self == Extended && stream == Baseline)
            || (self == Other(0xf4) && stream == Other(0x2c))
            || match (high_rank(self), high_rank(stream)) {
                (Some(a), Some(b)) => a >= b,
                (Some(_), None) => matches!(stream, Main | ConstrainedHigh),
                _ => false,
            }
    }
}

/// The offered H.264 payload types in packetization-mode 1 (WebRTC's non-interleaved mode),
/// in the offer's order, with their profiles (an absent `profile-level-id` is 42001f, RFC
/// 6184's default).
fn offered_h264(offer: &Offer) -> Vec<(&OfferedCodec, Option<H264Profile>)> {
    offer
        .video
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case("H264") && c.clock == 90000)
        .filter(|c| fmtp_param(&c.fmtp, "packetization-mode") == Some("1"))
        .map(|c| {
            let plid = fmtp_param(&c.fmtp, "profile-level-id").unwrap_or("42001f");
            (c, H264Profile::of(plid))
        })
        .collect()
}

/// Chooses the offered H.264 payload type to send `source_plid` (the source's
/// profile-level-id) with: among the payload types in packetization-mode 1, the first whose
/// profile decodes the source's, preferring the same profile. `None` when the offer has no
/// usable H.264, or none that decodes the source's profile (then the stream needs a
/// rendition: see [`h264_accepts`]). An unknown source profile takes constrained baseline's
/// payload type, else the first.
///
/// The level is not compared: browsers offer level 3.1 and decode higher levels (with
/// `level-asymmetry-allowed=1` in every offer), and refusing a 1080p source's level 4 would
/// transcode every such stream for nothing.
pub fn choose_h264(offer: &Offer, source_plid: Option<&str>) -> Option<OfferedCodec> {
    let h264 = offered_h264(offer);
    let Some(src) = source_plid.and_then(H264Profile::of) else {
        return h264
            .iter()
            .find(|(_, p)| *p == Some(H264Profile::ConstrainedBaseline))
            .or_else(|| h264.first())
            .map(|(c, _)| (*c).clone());
    };
    h264.iter()
        .find(|(_, p)| *p == Some(src))
        .or_else(|| h264.iter().find(|(_, p)| p.is_some_and(|p| p.decodes(src))))
        .map(|(c, _)| (*c).clone())
}

/// Whether the offer can take the source as it is: `Ok` if one of its H.264 payload types
/// decodes the source's profile (or the profile is unknown), `Err(why)` naming the profile
/// when only other H.264 profiles are offered (the viewer needs a rendition), and `Ok` too
/// when there is no usable H.264 at all (the caller refuses that on its own).
pub fn h264_accepts(offer: &Offer, source_plid: Option<&str>) -> Result<(), String> {
    let h264 = offered_h264(offer);
    let Some((plid, src)) = source_plid.and_then(|p| Some((p, H264Profile::of(p)?))) else {
        return Ok(());
    };
    if h264.is_empty() || choose_h264(offer, Some(plid)).is_some() {
        return Ok(());
    }
    let offered: Vec<String> = h264
        .iter()
        .filter_map(|(c, _)| fmtp_param(&c.fmtp, "profile-level-id"))
        .map(str::to_ascii_lowercase)
        .collect();
    Err(format!(
        "the viewer does not decode the stream's H.264 profile ({}, profile-level-id \
         {plid}); it offered {}",
        src.name(),
        if offered.is_empty() {
            "42001f".to_string()
        } else {
            offered.join(", ")
        }
    ))
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
        // Constrained baseline (x264's 42c0) → the 42e0 payload type, which decodes it.
        assert_eq!(choose_h264(&o, Some("42c01e")).unwrap().pt, 104);
        assert_eq!(choose_h264(&o, None).unwrap().pt, 104);
        assert!(h264_accepts(&o, Some("4d0028")).is_ok());
        // High is not offered: no payload type takes it, the viewer needs a rendition.
        assert!(choose_h264(&o, Some("640028")).is_none());
        let why = h264_accepts(&o, Some("640028")).unwrap_err();
        assert!(
            why.contains("High") && why.contains("42e01f, 4d001f"),
            "{why}"
        );
        // An unknown profile, or no H.264 at all, is not this check's to refuse.
        assert!(h264_accepts(&o, None).is_ok());
        let vp8_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(h264_accepts(&parse_offer(vp8_only).unwrap(), Some("640028")).is_ok());
    }

    /// Chromium's offer (High and Constrained High besides the baselines): High 10 is the
    /// profile it does not take.
    #[test]
    fn profiles_decode_their_subsets() {
        use H264Profile::*;
        let of = |p| H264Profile::of(p).unwrap();
        assert_eq!(of("42e01f"), ConstrainedBaseline);
        assert_eq!(of("42c01e"), ConstrainedBaseline);
        assert_eq!(of("4d401f"), ConstrainedBaseline);
        assert_eq!(of("42001f"), Baseline);
        assert_eq!(of("4d0028"), Main);
        assert_eq!(of("640c1f"), ConstrainedHigh);
        assert_eq!(of("640028"), High);
        assert_eq!(of("6e0028"), Other(0x6e));
        assert_eq!(H264Profile::of("zz"), None);
        assert!(High.decodes(Main) && High.decodes(ConstrainedBaseline));
        assert!(Main.decodes(ConstrainedBaseline) && !Main.decodes(High));
        assert!(!ConstrainedBaseline.decodes(Baseline) && Baseline.decodes(ConstrainedBaseline));
        assert!(!High.decodes(Other(0x6e)) && Other(0x6e).decodes(High));
        assert!(Other(0xf4).decodes(Other(0x6e)) && Other(0xf4).decodes(Main));
        assert!(!Other(0x6e).decodes(Other(0xf4)) && !Main.decodes(ConstrainedHigh));
        assert!(Other(0xf4).decodes(Other(0x2c)) && !Other(0x53).decodes(ConstrainedBaseline));
        let chromium = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 104 106 108 112\r\n\
            a=rtpmap:104 H264/90000\r\na=fmtp:104 packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:106 H264/90000\r\na=fmtp:106 packetization-mode=1;profile-level-id=4d001f\r\n\
            a=rtpmap:108 H264/90000\r\na=fmtp:108 packetization-mode=1;profile-level-id=640c1f\r\n\
            a=rtpmap:112 H264/90000\r\na=fmtp:112 packetization-mode=1;profile-level-id=64001f\r\n";
        let o = parse_offer(chromium).unwrap();
        assert_eq!(choose_h264(&o, Some("640028")).unwrap().pt, 112);
        assert_eq!(choose_h264(&o, Some("640c28")).unwrap().pt, 108);
        assert_eq!(choose_h264(&o, Some("42c01e")).unwrap().pt, 104);
        assert!(h264_accepts(&o, Some("6e0028"))
            .unwrap_err()
            .contains("High 10"));
        // Chromium 156 offers High 4:4:4 Predictive and no High: High and High 10 go there.
        let chromium156 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 104 106 114\r\n\
            a=rtpmap:104 H264/90000\r\na=fmtp:104 packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:106 H264/90000\r\na=fmtp:106 packetization-mode=1;profile-level-id=4d001f\r\n\
            a=rtpmap:114 H264/90000\r\na=fmtp:114 packetization-mode=1;profile-level-id=f4001f\r\n";
        let o = parse_offer(chromium156).unwrap();
        assert_eq!(choose_h264(&o, Some("640028")).unwrap().pt, 114);
        assert_eq!(choose_h264(&o, Some("4d0028")).unwrap().pt, 106);
        assert_eq!(choose_h264(&o, Some("6e0028")).unwrap().pt, 114);
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
