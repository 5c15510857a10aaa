//! Renditions for WebRTC viewers of streams browsers cannot play as they are (H.264 with
//! B-frames, HEVC): one supervised ffmpeg per stream, shared by all its viewers, started by
//! the first viewer that needs it and stopped a grace period after the last one left.
//!
//! The pipeline, all on this host: `framecache export SLOT` writes the slot as MPEG-TS into
//! ffmpeg's stdin; ffmpeg decodes (libavcodec: B-frames and HEVC) and encodes H.264
//! constrained baseline without B-frames with libx264 (`-preset ultrafast -tune zerolatency`, a keyframe every
//! second, the source's size and rate, audio copied), and sends MPEG-TS over loopback UDP to
//! this server's ingest engine, which writes the rendition's packet slot `SLOT-webrtc` (visible
//! in `framecache ls`, readable by anyone). ffmpeg runs as a child process of the system's
//! ffmpeg rather than linked: libx264 is GPL and stays out of libframecache, and a crash of a
//! decoder takes down one rendition, not the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use framecache::ingest::Engine;

/// Viewers gone this long: the rendition stops.
pub const GRACE: Duration = Duration::from_secs(10);
/// A rendition must be live within this.
const START_TIMEOUT: Duration = Duration::from_secs(15);

struct Running {
    rendition: String,
    export: Child,
    ffmpeg: Child,
    /// The loopback UDP port the engine's input of the rendition listens on.
    port: u16,
    /// Pipelines restarted after they died while watched.
    restarts: u32,
    started: Instant,
    idle_since: Option<Instant>,
    /// CPU seconds of ffmpeg at the last look, and when.
    last_cpu: (f64, Instant),
    cpu_percent: f64,
}

impl Running {
    fn alive(&mut self) -> bool {
        matches!(self.export.try_wait(), Ok(None)) && matches!(self.ffmpeg.try_wait(), Ok(None))
    }

    fn stop(mut self, engine: &Mutex<Engine>) {
        let _ = self.ffmpeg.kill();
        let _ = self.export.kill();
        let _ = self.ffmpeg.wait();
        let _ = self.export.wait();
        engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.rendition);
    }
}

/// What `/api/streams` and `/metrics` say of a stream being transcoded.
#[derive(Clone, Debug)]
pub struct Status {
    pub rendition: String,
    pub seconds: u64,
    pub cpu_percent: f64,
    pub restarts: u32,
}

/// How much of the input ffmpeg probes first when the source's audio is in step with its
/// video. The input starts at the source's latest keyframe, so only the GOP so far is there at
/// once and ffmpeg waits in real time for the rest of the probe: 500 ms put up to 0.5 s on
/// every cold start (rendition live after 163–608 ms at 360p, 367–755 ms at 720p; 150 ms:
/// 147–284 and 162–391 ms, same machine and run).
const PROBE: Duration = Duration::from_millis(150);
/// How far audio is taken to trail video when the ring does not tell yet: a muxer that holds
/// audio back (ffmpeg's MPEG-TS muxer, up to its 0.7 s `max_delay`, e.g. an SRT push) would
/// fail a short probe and cost a second start.
const PROBE_AUDIO_LATE: Duration = Duration::from_millis(700);
/// The probe of a second try (a source whose audio came later) and of restarts.
const PROBE_LONG: Duration = Duration::from_secs(2);

/// A pipeline that died while watched is restarted this many times, then given up.
const MAX_RESTARTS: u32 = 10;

/// The H.264 encoder of the renditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// x264 in software, `ultrafast` + `zerolatency`.
    Libx264,
    /// NVIDIA NVENC (through the CUDA driver).
    Nvenc,
    /// VA-API (Intel/AMD) on /dev/dri/renderD128.
    Vaapi,
}

impl Encoder {
    /// Parses `transcode_encoder` (`auto` is [`Encoder::choose`]'s business).
    pub fn parse(v: &str) -> Option<Encoder> {
        match v {
            "libx264" | "x264" => Some(Encoder::Libx264),
            "h264_nvenc" | "nvenc" => Some(Encoder::Nvenc),
            "h264_vaapi" | "vaapi" => Some(Encoder::Vaapi),
            _ => None,
        }
    }

    /// ffmpeg's name of it.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Libx264 => "libx264",
            Encoder::Nvenc => "h264_nvenc",
            Encoder::Vaapi => "h264_vaapi",
        }
    }

    /// What `/api/streams` says of it.
    pub fn describe(self) -> &'static str {
        match self {
            Encoder::Libx264 => "libx264 ultrafast zerolatency, constrained baseline",
            Encoder::Nvenc => "h264_nvenc p1 ull, constrained baseline",
            Encoder::Vaapi => "h264_vaapi, constrained baseline",
        }
    }

    /// The ffmpeg arguments that encode the video: constrained baseline, no B-frames, a
    /// keyframe every second.
    fn args(self) -> Vec<&'static str> {
        let mut a = match self {
            Encoder::Libx264 => vec![
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-profile:v",
                "baseline",
                "-pix_fmt",
                "yuv420p",
            ],
            Encoder::Nvenc => vec![
                "-c:v",
                "h264_nvenc",
                "-preset",
                "p1",
                "-tune",
                "ull",
                "-zerolatency",
                "1",
                "-profile:v",
                "baseline",
                "-pix_fmt",
                "yuv420p",
                "-forced-idr",
                "1",
            ],
            Encoder::Vaapi => vec![
                "-vf",
                "format=nv12,hwupload",
                "-c:v",
                "h264_vaapi",
                "-profile:v",
                "constrained_baseline",
            ],
        };
        // A keyframe each second of the (source's, -copyts) time line.
        a.extend([
            "-bf",
            "0",
            "-force_key_frames",
            "expr:if(isnan(prev_forced_t),1,gte(t,prev_forced_t+1))",
        ]);
        a
    }

    /// Arguments before the input (the VA-API device).
    fn input_args(self) -> Vec<&'static str> {
        match self {
            Encoder::Vaapi => vec!["-vaapi_device", VAAPI_DEVICE],
            _ => Vec::new(),
        }
    }

    /// `auto`: a hardware encoder when ffmpeg has it, its device exists and a test encode
    /// works (NVENC first, then VA-API), else libx264. `encoders` is `ffmpeg -encoders`'
    /// output; `device` says whether a path exists; `works` runs a test encode.
    pub fn choose(
        encoders: &str,
        device: impl Fn(&str) -> bool,
        works: impl Fn(Encoder) -> bool,
    ) -> Encoder {
        let listed = |name: &str| {
            encoders
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name))
        };
        [
            (Encoder::Nvenc, "/dev/nvidia0"),
            (Encoder::Vaapi, VAAPI_DEVICE),
        ]
        .into_iter()
        .find(|&(e, dev)| listed(e.name()) && device(dev) && works(e))
        .map_or(Encoder::Libx264, |(e, _)| e)
    }

    /// Whether the system's ffmpeg can encode a few frames with it here.
    pub fn works(self) -> bool {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(self.input_args())
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=30",
                "-frames:v",
                "5",
            ])
            .args(self.args())
            .args(["-f", "null", "-"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `auto` on this machine.
    pub fn detect() -> Encoder {
        let list = Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        Encoder::choose(&list, |p| std::path::Path::new(p).exists(), Encoder::works)
    }
}

const VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// The transcoders of a `serve`.
#[derive(Clone)]
pub struct Transcoder {
    running: Arc<Mutex<HashMap<String, Running>>>,
    engine: Arc<Mutex<Engine>>,
    root: PathBuf,
    /// Streams whose key forbids transcoding.
    forbidden: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    enabled: bool,
    encoder: Encoder,
}

impl Transcoder {
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        root: PathBuf,
        enabled: bool,
        encoder: Encoder,
        forbidden: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Transcoder {
        Transcoder {
            running: Arc::default(),
            engine,
            root,
            forbidden,
            enabled,
            encoder,
        }
    }

    /// The encoder the renditions use.
    pub fn encoder(&self) -> Encoder {
        self.encoder
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rendition of `stream` for WebRTC (started if needed), once it is live.
    pub fn rendition(&self, stream: &str, why: &str) -> Result<String, String> {
        if !self.enabled {
            return Err(
                "transcoding is off on this server (transcode = false); push H.264 that \
                 browsers decode as it is (x264/ffmpeg: -profile:v baseline -bf 0)"
                    .into(),
            );
        }
        if (self.forbidden)(stream) {
            return Err(format!(
                "transcoding is off for {stream} ([[keys]] transcode = false); push H.264 \
                 that browsers decode as it is (x264/ffmpeg: -profile:v baseline -bf 0)"
            ));
        }
        let (rendition, started) = {
            let mut m = self.lock();
            let alive = m.get_mut(stream).is_some_and(Running::alive);
            if !alive {
                if let Some(old) = m.remove(stream) {
                    old.stop(&self.engine);
                }
                let r = self.start(stream)?;
                log::info!(
                    "serve: transcoding {stream} for WebRTC into {} ({why})",
                    r.rendition
                );
                m.insert(stream.to_string(), r);
            }
            let r = m.get_mut(stream).expect("inserted");
            r.idle_since = None;
            (r.rendition.clone(), !alive)
        };
        let t = Instant::now();
        self.wait_live(stream, &rendition)?;
        if started {
            log::info!(
                "serve: rendition {rendition} live after {} ms",
                t.elapsed().as_millis()
            );
        }
        Ok(rendition)
    }

    fn start(&self, stream: &str) -> Result<Running, String> {
        let rendition = format!("{stream}-webrtc");
        framecache::slot::validate_id(&rendition).map_err(|e| e.to_string())?;
        // A free loopback UDP port for ffmpeg → the engine.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| format!("no UDP port for the transcoder: {e}"))?
            .port();
        {
            let mut e = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            e.remove(&rendition);
            e.add(&rendition, &[&format!("udp://127.0.0.1:{port}")])
                .map_err(|e| format!("rendition slot {rendition}: {e}"))?;
        }
        let probe = self.probe_for(stream);
        log::debug!(
            "serve: transcoder of {stream}: probing {} ms",
            probe.as_millis()
        );
        match self.spawn(stream, port, probe) {
            Ok((export, ffmpeg)) => Ok(Running {
                rendition,
                export,
                ffmpeg,
                port,
                restarts: 0,
                started: Instant::now(),
                idle_since: None,
                last_cpu: (0.0, Instant::now()),
                cpu_percent: 0.0,
            }),
            Err(e) => {
                self.engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&rendition);
                Err(e)
            }
        }
    }

    /// How long ffmpeg should probe `stream`, from the GOP so far (what `export` hands ffmpeg
    /// at once, in the ring's order): ffmpeg stops probing once that much of the video went by,
    /// so the probe must reach past the first audio packet. [`PROBE`] beyond the video before
    /// the first audio; when the GOP holds no audio yet, beyond the GOP and the audio's lag
    /// behind the video; at most [`PROBE_LONG`].
    fn probe_for(&self, stream: &str) -> Duration {
        use framecache::packet::{rescale, PacketStart, FC_MEDIA_AUDIO, FC_MEDIA_VIDEO, FC_NOPTS};
        let Ok(mut r) = framecache::packet::PacketReader::open_in(
            &self.root,
            stream,
            framecache::packet::PacketReaderConfig {
                start: PacketStart::Keyframe,
            },
        ) else {
            return PROBE_AUDIO_LATE;
        };
        let streams = r.streams();
        let video = streams.iter().find(|s| s.media == FC_MEDIA_VIDEO);
        let video = video.map(|v| (v.index, v.timebase));
        let audio: Vec<u32> = streams
            .iter()
            .filter(|s| s.media == FC_MEDIA_AUDIO)
            .map(|s| s.index)
            .collect();
        if audio.is_empty() {
            return PROBE;
        }
        // The video's span so far, in ms.
        let (mut first, mut last) = (None::<i64>, None::<i64>);
        let span = |f: Option<i64>, l: Option<i64>| match (f, l) {
            (Some(f), Some(l)) => Duration::from_millis((l - f).clamp(0, 10_000) as u64),
            _ => Duration::ZERO,
        };
        while let Ok(p) = r.next(Duration::ZERO) {
            if audio.contains(&p.info.stream) {
                return (span(first, last) + PROBE).min(PROBE_LONG);
            }
            if let Some((_, tb)) = video.filter(|v| v.0 == p.info.stream) {
                if p.info.pts != FC_NOPTS {
                    let ms = rescale(p.info.pts, tb, 1000);
                    first.get_or_insert(ms);
                    last = Some(ms);
                }
            }
        }
        // No audio since the keyframe: reach as far past it as the source's audio trails its
        // video at the ring's head (about nothing over RTMP, up to 0.7 s from an MPEG-TS muxer).
        let lag = self
            .audio_lag(stream, video, &audio)
            .unwrap_or(PROBE_AUDIO_LATE);
        (span(first, last) + lag + PROBE).min(PROBE_LONG)
    }

    /// How far the newest audio packet's time trails the newest video packet's in the ring
    /// of `stream` (packets in the order they came); `None` without both.
    fn audio_lag(
        &self,
        stream: &str,
        video: Option<(u32, (u32, u32))>,
        audio: &[u32],
    ) -> Option<Duration> {
        use framecache::packet::{rescale, PacketStart, FC_NOPTS};
        let (v, vtb) = video?;
        let mut r = framecache::packet::PacketReader::open_in(
            &self.root,
            stream,
            framecache::packet::PacketReaderConfig {
                start: PacketStart::OldestKeyframe,
            },
        )
        .ok()?;
        let tbs: Vec<(u32, (u32, u32))> =
            r.streams().iter().map(|s| (s.index, s.timebase)).collect();
        let (mut nv, mut na) = (None::<i64>, None::<i64>);
        // Bounded: a deep ring of small packets is not read to its end.
        for _ in 0..20_000 {
            let Ok(p) = r.next(Duration::ZERO) else { break };
            if p.info.pts == FC_NOPTS {
                continue;
            }
            if p.info.stream == v {
                nv = Some(rescale(p.info.pts, vtb, 1000));
            } else if audio.contains(&p.info.stream) {
                let tb = tbs.iter().find(|t| t.0 == p.info.stream)?.1;
                na = Some(rescale(p.info.pts, tb, 1000));
            }
        }
        Some(Duration::from_millis((nv? - na?).clamp(0, 2_000) as u64))
    }

    /// Starts `framecache export STREAM | ffmpeg … udp://127.0.0.1:PORT`, ffmpeg probing
    /// `probe` of the input before it starts.
    fn spawn(&self, stream: &str, port: u16, probe: Duration) -> Result<(Child, Child), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut export = Command::new(exe)
            .args([
                "-q",
                "export",
                stream,
                "/dev/stdout",
                "--timeout-ms",
                "5000",
            ])
            .env("FC_SHM_DIR", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run framecache export: {e}"))?;
        let input = export.stdout.take().expect("piped");
        let ffmpeg = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error"])
            .args(self.encoder.input_args())
            // The input starts at a keyframe with the GOP so far: probe a fraction of a second
            // of it, not ffmpeg's default 5 s (5 s of start-up on a live pipe; it waits for the
            // whole duration), and keep what was probed (`-fflags +nobuffer` dropped it, so
            // decoding began mid-GOP and waited for the next keyframe: 1.8 s to the first frame
            // instead of 0.3 s). The probe needs bytes too: 200 KB was too little for 1080p's
            // audio.
            .args(["-probesize", "2000000", "-analyzeduration"])
            .arg(probe.as_micros().to_string())
            // Frame-threaded decoding holds a frame per extra thread (2 frames, 67 ms, with
            // ffmpeg's auto count on 2 cores); one decoding thread holds none.
            .args(["-threads", "1"])
            .args([
                "-f", "mpegts", "-i", "pipe:0", "-map", "0:v:0", "-map", "0:a:0?",
            ])
            .args(self.encoder.args())
            // The source's timestamps go through unchanged: a rendition frame has the pts of its
            // source frame (the latency benchmark pairs them so), and a restarted pipeline
            // continues the timeline.
            .args([
                "-copyts",
                "-c:a",
                "copy",
                "-f",
                "mpegts",
                "-mpegts_copyts",
                "1",
            ])
            .args(["-flush_packets", "1", "-omit_video_pes_length", "0"])
            .args(["-max_interleave_delta", "1"])
            .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        match ffmpeg {
            Ok(f) => Ok((export, f)),
            Err(e) => {
                let _ = export.kill();
                let _ = export.wait();
                Err(format!("cannot run ffmpeg (apt install ffmpeg): {e}"))
            }
        }
    }

    /// Waits until the rendition's slot has video with its parameters and has caught up with
    /// its source. (ffmpeg starts with the source's GOP so far and encodes it faster than real
    /// time; a viewer let in during that burst saw frames early, then "late": Chromium counted
    /// 15 freezes in the first 6 s. Once caught up, a new viewer gets the rendition's GOP from
    /// the cache, compressed in time, then live frames at their pace.)
    fn wait_live(&self, stream: &str, rendition: &str) -> Result<(), String> {
        use framecache::packet::{PacketStart, FC_MEDIA_VIDEO};
        let open = |slot: &str| {
            framecache::packet::PacketReader::open_in(
                &self.root,
                slot,
                framecache::packet::PacketReaderConfig {
                    start: PacketStart::Keyframe,
                },
            )
            .ok()
        };
        let t = Instant::now();
        let mut retried = false;
        let (mut src, mut rend) = (open(stream), None);
        let (mut src_pts, mut rend_pts) = (None::<i64>, None::<i64>);
        loop {
            if rend.is_none() {
                rend = open(rendition);
            }
            src_pts = newest_video_pts(src.as_mut()).max(src_pts);
            rend_pts = newest_video_pts(rend.as_mut()).max(rend_pts);
            let params = rend.as_ref().is_some_and(|r| {
                r.streams()
                    .iter()
                    .find(|s| s.media == FC_MEDIA_VIDEO)
                    .is_some_and(|v| r.codec_params(v.index, 0).is_ok())
            });
            // Within 0.2 s of the source (the rendition keeps its timestamps: -copyts).
            let caught_up = match (src_pts, rend_pts) {
                (Some(s), Some(r)) => r >= s - 18_000,
                (None, Some(_)) => true,
                _ => false,
            };
            if params && caught_up {
                return Ok(());
            }
            if params && t.elapsed() > START_TIMEOUT / 2 {
                // Never caught up (a source faster than the machine can transcode): go on.
                return Ok(());
            }
            let mut m = self.lock();
            let Some(r) = m.get_mut(stream) else {
                return Err("the transcoder stopped (see the server's log)".into());
            };
            if !r.alive() {
                // Most often the probe ended before the audio's parameters came: once more,
                // probing longer.
                if retried {
                    return Err("the transcoder stopped (see the server's log)".into());
                }
                retried = true;
                log::info!("serve: the transcoder of {stream} stopped at start; trying again");
                let _ = r.ffmpeg.kill();
                let _ = r.export.kill();
                let _ = r.ffmpeg.wait();
                let _ = r.export.wait();
                let (export, ffmpeg) = self.spawn(stream, r.port, PROBE_LONG)?;
                r.export = export;
                r.ffmpeg = ffmpeg;
            }
            drop(m);
            if t.elapsed() > START_TIMEOUT {
                return Err("the transcoder did not produce video in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops renditions without viewers for [`GRACE`] and those whose pipeline ended;
    /// measures ffmpeg's CPU. `viewers(stream)` counts the stream's WebRTC viewers.
    pub fn tick(&self, viewers: impl Fn(&str) -> usize) {
        let now = Instant::now();
        let mut stop = Vec::new();
        let mut m = self.lock();
        for (stream, r) in m.iter_mut() {
            let cpu = process_cpu_seconds(r.ffmpeg.id());
            let dt = now.duration_since(r.last_cpu.1).as_secs_f64();
            if dt > 0.5 {
                r.cpu_percent = 100.0 * (cpu - r.last_cpu.0).max(0.0) / dt;
                r.last_cpu = (cpu, now);
            }
            // Viewers of the stream fed from the rendition, and viewers whose offers did not
            // take the source's H.264 profile, who watch the rendition under its own name.
            if viewers(stream) + viewers(&r.rendition) > 0 {
                r.idle_since = None;
            } else if r.idle_since.is_none() {
                r.idle_since = Some(now);
            }
            let idle = r.idle_since.is_some_and(|t| now.duration_since(t) >= GRACE);
            if idle {
                stop.push(stream.clone());
            } else if !r.alive() {
                // Supervised: a pipeline that died while watched (a decoder crash, a killed
                // process) is started again into the same rendition slot, its timeline going on,
                // as long as its source is live.
                let watched = r.idle_since.is_none();
                if watched && r.restarts < MAX_RESTARTS && self.source_live(stream) {
                    let _ = r.ffmpeg.kill();
                    let _ = r.export.kill();
                    let _ = r.ffmpeg.wait();
                    let _ = r.export.wait();
                    match self.spawn(stream, r.port, PROBE_LONG) {
                        Ok((export, ffmpeg)) => {
                            r.export = export;
                            r.ffmpeg = ffmpeg;
                            r.restarts += 1;
                            r.last_cpu = (0.0, now);
                            log::warn!(
                                "serve: the transcoder of {stream} stopped; restarted ({} of {MAX_RESTARTS})",
                                r.restarts
                            );
                        }
                        Err(e) => {
                            log::warn!("serve: the transcoder of {stream} cannot restart: {e}");
                            stop.push(stream.clone());
                        }
                    }
                } else {
                    stop.push(stream.clone());
                }
            }
        }
        for s in stop {
            if let Some(r) = m.remove(&s) {
                log::info!("serve: transcoding of {s} stopped");
                r.stop(&self.engine);
            }
        }
    }

    fn source_live(&self, stream: &str) -> bool {
        framecache::packet::PacketReader::open_in(
            &self.root,
            stream,
            framecache::packet::PacketReaderConfig::default(),
        )
        .is_ok_and(|r| r.writer_alive())
    }

    /// The streams being transcoded.
    pub fn status(&self) -> HashMap<String, Status> {
        self.lock()
            .iter()
            .map(|(s, r)| {
                (
                    s.clone(),
                    Status {
                        rendition: r.rendition.clone(),
                        seconds: r.started.elapsed().as_secs(),
                        cpu_percent: r.cpu_percent,
                        restarts: r.restarts,
                    },
                )
            })
            .collect()
    }

    /// Stops every transcoder.
    pub fn shutdown(&self) {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for r in all {
            r.stop(&self.engine);
        }
    }
}

/// The newest video pts (90 kHz) among the packets `r` has not read yet, reading them all.
fn newest_video_pts(r: Option<&mut framecache::packet::PacketReader>) -> Option<i64> {
    let r = r?;
    let video = r
        .streams()
        .iter()
        .find(|s| s.media == framecache::packet::FC_MEDIA_VIDEO)
        .map(|s| (s.index, s.timebase))?;
    let mut newest = None;
    while let Ok(p) = r.next(Duration::ZERO) {
        if p.info.stream == video.0 && p.info.pts != framecache::packet::FC_NOPTS {
            newest = newest.max(Some(framecache::packet::rescale(
                p.info.pts, video.1, 90_000,
            )));
        }
    }
    newest
}

/// user + system CPU seconds of process `pid` (/proc/PID/stat).
fn process_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

#[cfg(test)]
mod tests {
    use super::Encoder;

    const LIST: &str = " V....D libx264              libx264 H.264 / AVC\n \
                        V....D h264_nvenc           NVIDIA NVENC H.264 encoder\n \
                        V....D h264_vaapi           H.264/AVC (VAAPI)\n";

    #[test]
    fn auto_takes_a_working_hardware_encoder_else_x264() {
        let all = |_: &str| true;
        assert_eq!(Encoder::choose(LIST, all, |_| true), Encoder::Nvenc);
        // No GPU device node: VA-API.
        let no_nv = |p: &str| !p.contains("nvidia");
        assert_eq!(Encoder::choose(LIST, no_nv, |_| true), Encoder::Vaapi);
        // Listed and present but the test encode fails (no driver): next one.
        assert_eq!(
            Encoder::choose(LIST, all, |e| e != Encoder::Nvenc),
            Encoder::Vaapi
        );
        assert_eq!(Encoder::choose(LIST, all, |_| false), Encoder::Libx264);
        // Not in this ffmpeg: never tried.
        assert_eq!(
            Encoder::choose(" V....D libx264 x\n", all, |_| true),
            Encoder::Libx264
        );
    }

    #[test]
    fn every_encoder_makes_baseline_without_b_frames_and_keyframes_each_second() {
        for e in [Encoder::Libx264, Encoder::Nvenc, Encoder::Vaapi] {
            let a = e.args().join(" ");
            assert!(a.contains("-bf 0") && a.contains("prev_forced_t+1"), "{a}");
            assert!(a.contains("baseline"), "{a}");
            assert_eq!(Encoder::parse(e.name()), Some(e));
        }
    }
}
