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
}

/// The transcoders of a `serve`.
#[derive(Clone)]
pub struct Transcoder {
    running: Arc<Mutex<HashMap<String, Running>>>,
    engine: Arc<Mutex<Engine>>,
    root: PathBuf,
    /// Streams whose key forbids transcoding.
    forbidden: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    enabled: bool,
}

impl Transcoder {
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        root: PathBuf,
        enabled: bool,
        forbidden: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Transcoder {
        Transcoder {
            running: Arc::default(),
            engine,
            root,
            forbidden,
            enabled,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rendition of `stream` for WebRTC (started if needed), once it is live.
    pub fn rendition(&self, stream: &str, why: &str) -> Result<String, String> {
        if !self.enabled {
            return Err(
                "transcoding is off on this server (transcode = false); push the \
                        stream without B-frames (x264/ffmpeg: -bf 0) and as H.264"
                    .into(),
            );
        }
        if (self.forbidden)(stream) {
            return Err(format!(
                "transcoding is off for {stream} ([[keys]] transcode = false); push it without \
                 B-frames (x264/ffmpeg: -bf 0) and as H.264"
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
            .args(["-hide_banner", "-loglevel", "error", "-fflags", "+nobuffer"])
            // The input starts at a keyframe with its parameters: probe until every stream's
            // parameters are known, at most 1 s of it, not ffmpeg's default 5 s (which is 5 s
            // of start-up on a live pipe). 200 KB was too little for 1080p's audio.
            .args(["-probesize", "2000000", "-analyzeduration", "1000000"])
            .args([
                "-f", "mpegts", "-i", "pipe:0", "-map", "0:v:0", "-map", "0:a:0?",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-profile:v", "baseline", "-bf", "0", "-pix_fmt", "yuv420p"])
            .args(["-force_key_frames", "expr:gte(t,n_forced*1)"])
            .args(["-c:a", "copy", "-f", "mpegts"])
            .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let ffmpeg = match ffmpeg {
            Ok(f) => f,
            Err(e) => {
                let _ = export.kill();
                let _ = export.wait();
                self.engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&rendition);
                return Err(format!("cannot run ffmpeg (apt install ffmpeg): {e}"));
            }
        };
        Ok(Running {
            rendition,
            export,
            ffmpeg,
            started: Instant::now(),
            idle_since: None,
            last_cpu: (0.0, Instant::now()),
            cpu_percent: 0.0,
        })
    }

    /// Waits until the rendition's slot has video with its parameters.
    fn wait_live(&self, stream: &str, rendition: &str) -> Result<(), String> {
        let t = Instant::now();
        loop {
            if let Ok(r) = framecache::packet::PacketReader::open_in(
                &self.root,
                rendition,
                framecache::packet::PacketReaderConfig::default(),
            ) {
                let video = r
                    .streams()
                    .iter()
                    .find(|s| s.media == framecache::packet::FC_MEDIA_VIDEO)
                    .map(|s| s.index);
                if video.is_some_and(|v| r.codec_params(v, 0).is_ok()) {
                    return Ok(());
                }
            }
            let dead = self.lock().get_mut(stream).is_none_or(|r| !r.alive());
            if dead {
                return Err("the transcoder stopped (see the server's log)".into());
            }
            if t.elapsed() > START_TIMEOUT {
                return Err("the transcoder did not produce video in time".into());
            }
            std::thread::sleep(Duration::from_millis(100));
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
            if viewers(stream) > 0 {
                r.idle_since = None;
            } else if r.idle_since.is_none() {
                r.idle_since = Some(now);
            }
            let idle = r.idle_since.is_some_and(|t| now.duration_since(t) >= GRACE);
            if idle || !r.alive() {
                stop.push(stream.clone());
            }
        }
        for s in stop {
            if let Some(r) = m.remove(&s) {
                log::info!("serve: transcoding of {s} stopped");
                r.stop(&self.engine);
            }
        }
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
