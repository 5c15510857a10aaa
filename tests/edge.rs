//! Origin → edge across two hosts: two `framecache serve` in two network namespaces joined by a
//! veth pair, each with its own slot root. The origin takes an RTMP push; the edge pulls it over
//! SRT through a relay that adds 100 ms of round trip and 1 % loss each way (this kernel has no
//! netem), with a file slate as backup, and aiortc viewers watch the edge over WHEP. The origin
//! is killed (the edge fails over to the slate) and comes back (the edge fails back). A second
//! case pulls over RTMP. Needs root for `ip netns`; skips with a message otherwise.
//! The figures go to docs/SCALING.md.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{aiortc_python, have, skip, Reaper, TempRoot};

/// Two namespaces and the veth between them, removed on drop.
struct Hosts {
    origin: String,
    edge: String,
    origin_ip: String,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.origin, &self.edge] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An origin and an edge host, or why not.
fn hosts(tag: &str) -> Result<Hosts, String> {
    if !ip(&["netns", "list"]) {
        return Err("no `ip` command (apt install iproute2)".into());
    }
    let id = std::process::id() % 100_000;
    let (o, e) = (format!("fco{tag}{id}"), format!("fce{tag}{id}"));
    let (vo, ve) = (format!("vo{tag}{id}"), format!("ve{tag}{id}"));
    // (The netem check of the SRT case names these devices again: vo/ve + tag + id.)
    if !ip(&["netns", "add", &o]) {
        return Err("cannot create network namespaces (needs root)".into());
    }
    let h = Hosts {
        origin: o.clone(),
        edge: e.clone(),
        origin_ip: format!("10.213.{}.1", id % 200),
    };
    let edge_ip = format!("10.213.{}.2", id % 200);
    let ok = ip(&["netns", "add", &e])
        && ip(&["link", "add", &vo, "type", "veth", "peer", "name", &ve])
        && ip(&["link", "set", &vo, "netns", &o])
        && ip(&["link", "set", &ve, "netns", &e])
        && ip(&[
            "-n",
            &o,
            "addr",
            "add",
            &format!("{}/24", h.origin_ip),
            "dev",
            &vo,
        ])
        && ip(&[
            "-n",
            &e,
            "addr",
            "add",
            &format!("{edge_ip}/24"),
            "dev",
            &ve,
        ])
        && ip(&["-n", &o, "link", "set", &vo, "up"])
        && ip(&["-n", &e, "link", "set", &ve, "up"])
        && ip(&["-n", &o, "link", "set", "lo", "up"])
        && ip(&["-n", &e, "link", "set", "lo", "up"]);
    if !ok {
        return Err("cannot set up the veth pair between the namespaces".into());
    }
    Ok(h)
}

/// A `framecache serve` in namespace `ns`, and every line it printed with when.
struct Serve {
    child: Reaper,
    said: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Serve {
    /// When a line containing `what` was printed at or after `since`, waiting up to `limit`.
    fn wait_line(&self, what: &str, since: Instant, limit: Duration) -> Option<Instant> {
        let t = Instant::now();
        loop {
            if let Some(at) = self
                .said
                .lock()
                .unwrap()
                .iter()
                .find(|(at, l)| *at >= since && l.contains(what))
                .map(|(at, _)| *at)
            {
                return Some(at);
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        let s = self.said.lock().unwrap();
        s.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

fn serve_in(ns: &str, root: &Path, config: &str, args: &[&str]) -> Serve {
    let cfg = root.join(format!("{ns}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_framecache"),
            "serve",
        ])
        .args(args)
        .args(["--no-demo", "--config"])
        .arg(&cfg)
        .env("FC_SHM_DIR", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve in a namespace");
    let said = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let said = said.clone();
        let tag = ns.to_string();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
                said.lock().unwrap().push((Instant::now(), l));
            }
        });
    }
    let s = Serve {
        child: Reaper(child),
        said,
    };
    assert!(
        s.wait_line(
            "listening http",
            Instant::now() - Duration::from_secs(60),
            Duration::from_secs(20)
        )
        .is_some(),
        "serve in {ns} did not start: {}",
        s.text()
    );
    s
}

/// ffmpeg in `ns` pushing a live 640x360 H.264 (no B-frames) + AAC pattern to `url`.
fn push_in(ns: &str, url: &str) -> Reaper {
    Reaper(
        Command::new("ip")
            .args(["netns", "exec", ns, "ffmpeg", "-hide_banner", "-nostdin"])
            .args(["-loglevel", "error", "-re", "-f", "lavfi"])
            .args(["-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi"])
            .args(["-i", "sine=frequency=440:sample_rate=48000", "-t", "600"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-profile:v",
                "baseline",
                "-bf",
                "0",
                "-g",
                "30",
                "-b:v",
                "1M",
            ])
            .args(["-c:a", "aac", "-f", "flv", url])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg"),
    )
}

/// A 90 s blue slate with silence (H.264 baseline + AAC) in MPEG-TS.
fn slate(dir: &Path) -> PathBuf {
    let out = dir.join("slate.ts");
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
        ])
        .args(["-i", "color=c=blue:size=640x360:rate=30", "-f", "lavfi"])
        .args(["-i", "anullsrc=r=48000:cl=mono", "-t", "90"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "baseline",
        ])
        .args(["-bf", "0", "-g", "30", "-c:a", "aac", "-y"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg made the slate");
    out
}

/// aiortc viewers in `ns`, started now; their JSON report when they end.
fn viewers_in(ns: &str, py: &Path, url: &str, n: usize, secs: f64) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/whep_aiortc.py");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(py)
        .arg(script)
        .arg(url)
        .args(["--viewers", &n.to_string(), "--seconds", &secs.to_string()])
        .args(["--token", TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aiortc viewers")
}

fn report(child: std::process::Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "aiortc viewers failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("aiortc JSON");
    eprintln!("viewers: {v}");
    v["viewers"].as_array().cloned().unwrap_or_default()
}

/// The viewer token of both servers; the origin's is also the SRT passphrase of its play.
const TOKEN: &str = "edge-viewer-token";

fn origin_config() -> String {
    format!("[whep]\ntoken = \"{TOKEN}\"\n\n[[keys]]\nkey = \"cam1\"\n")
}

fn edge_config(primary: &str, slates: &Path) -> String {
    format!(
        "[whep]\ntoken = \"{TOKEN}\"\n\n[[inputs]]\nslot = \"cam1\"\nurls = [\"{primary}\", \
         \"file://slates/slate.ts\"]\ntimeout_ms = 1000\n\n[mounts]\nslates = {:?}\n",
        slates.display().to_string()
    )
}

fn start_origin(h: &Hosts, root: &Path) -> (Serve, Reaper) {
    let o = &h.origin_ip;
    let s = serve_in(
        &h.origin,
        root,
        &origin_config(),
        &[
            "--http",
            &format!("{o}:8080"),
            "--rtmp",
            &format!("{o}:1935"),
            "--srt",
            &format!("{o}:9710"),
        ],
    );
    let p = push_in(&h.origin, &format!("rtmp://{o}:1935/live/cam1"));
    (s, p)
}

/// The edge's cam1 is fed by its primary (`srt://`/`rtmp://`), by the slate, or by nothing.
fn feeding(edge: &Serve, since: Instant) -> Option<String> {
    let s = edge.said.lock().unwrap();
    s.iter()
        .rev()
        .take_while(|(at, _)| *at >= since)
        .find_map(|(_, l)| {
            l.strip_prefix("framecache: serve: connected ")
                .map(str::to_string)
        })
}

/// What both cases need: the two hosts, aiortc, and slot roots with the slate in the edge's.
struct Setup {
    h: Hosts,
    py: PathBuf,
    oroot: TempRoot,
    eroot: TempRoot,
}

/// The setup of the case `tag`, or `None` (skipped, with the reason) where a peer is missing.
fn setup(tag: &str) -> Option<Setup> {
    let h = match hosts(tag) {
        Ok(h) => h,
        Err(why) => {
            skip(&format!("origin → edge over two namespaces: {why}"));
            return None;
        }
    };
    if !have("ffmpeg") {
        skip("no ffmpeg (apt install ffmpeg)");
        return None;
    }
    let Some(py) = aiortc_python() else {
        skip("aiortc is not installed (pip install aiortc)");
        return None;
    };
    let (oroot, eroot) = (
        TempRoot::new(&format!("edge-origin-{tag}")),
        TempRoot::new(&format!("edge-edge-{tag}")),
    );
    slate(eroot.path());
    Some(Setup {
        h,
        py,
        oroot,
        eroot,
    })
}

#[test]
fn origin_to_edge_over_impaired_srt_with_failover_to_a_slate_and_back() {
    let Some(Setup {
        h,
        py,
        oroot,
        eroot,
    }) = setup("s")
    else {
        return;
    };
    let (origin, push) = start_origin(&h, oroot.path());

    // The link: 50 ms each way (100 ms RTT) and 1 % loss each way. With netem on both ends of
    // the veth where the kernel has it; else through a relay in the edge host (seeded).
    let netem = ["origin", "edge"].iter().all(|end| {
        let (ns, dev) = match *end {
            "origin" => (&h.origin, format!("vos{}", std::process::id() % 100_000)),
            _ => (&h.edge, format!("ves{}", std::process::id() % 100_000)),
        };
        ip(&[
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", &dev, "root", "netem", "delay",
            "50ms", "loss", "1%",
        ])
    });
    let mut relay = None;
    let target = if netem {
        eprintln!("edge: the link is impaired with tc netem");
        format!("{}:9710", h.origin_ip)
    } else {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/udp_relay.py");
        let mut r = Command::new("ip")
            .args(["netns", "exec", &h.edge, "python3"])
            .arg(&script)
            .args([
                "--listen",
                "127.0.0.1:7000",
                "--to",
                &format!("{}:9710", h.origin_ip),
            ])
            .args(["--delay-ms", "50", "--loss", "0.01", "--seed", "7"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the relay");
        let mut out = BufReader::new(r.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("PORT 7000"), "relay: {line}");
        eprintln!("edge: no netem here; the link is impaired by a relay in the edge host");
        relay = Some((Reaper(r), out));
        "127.0.0.1:7000".to_string()
    };

    // SRT latency 4 × RTT: room for retransmissions of a 1 % loss.
    let primary = format!(
        "srt://{target}?streamid=%23!::r%3Dcam1,m%3Drequest&passphrase={TOKEN}&latency=400"
    );
    let t0 = Instant::now();
    let edge = serve_in(
        &h.edge,
        eroot.path(),
        &edge_config(&primary, eroot.path()),
        &["--http", "127.0.0.1:8080", "--rtmp", "off", "--srt", "off"],
    );
    assert!(
        !edge.text().contains(TOKEN),
        "the passphrase stays out of the edge's output: {}",
        edge.text()
    );
    let connected = edge
        .wait_line(
            &format!("connected srt://{target}"),
            t0,
            Duration::from_secs(30),
        )
        .expect("the edge pulls the origin over SRT");
    eprintln!(
        "edge: first media from the origin {} ms after start",
        (connected - t0).as_millis()
    );

    // Viewers of the edge, over the impaired link: no freeze after the first second.
    let url = "http://127.0.0.1:8080/whep/cam1";
    let vs = report(viewers_in(&h.edge, &py, url, 2, 15.0));
    for v in &vs {
        assert_eq!(v["status"], 201, "{v}");
        assert_eq!(v["width"], 640, "{v}");
        assert!(
            v["frames"].as_u64().unwrap() >= 15 * 20,
            "15 s at 30 fps: {v}"
        );
        assert!(v["audio_frames"].as_u64().unwrap() > 100, "{v}");
        let gap = v["max_gap_after_1s"].as_f64().unwrap();
        assert!(gap < 0.5, "a freeze of {gap} s after the first second: {v}");
    }

    // The origin dies: the slate takes over. A viewer watches through the failover and back.
    let watcher = viewers_in(&h.edge, &py, url, 1, 20.0);
    std::thread::sleep(Duration::from_secs(3));
    drop(push);
    let killed = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &origin.child.0.id().to_string()])
        .status();
    drop(origin);
    let slate_at = edge
        .wait_line(
            "connected file://slates/slate.ts",
            killed,
            Duration::from_secs(10),
        )
        .expect("the edge fails over to the slate");
    let failover = slate_at - killed;
    eprintln!(
        "edge: failover to the slate {} ms after the origin was killed",
        failover.as_millis()
    );
    assert!(
        failover <= Duration::from_secs(2),
        "failover took {failover:?}"
    );
    assert_eq!(
        feeding(&edge, killed).as_deref(),
        Some("file://slates/slate.ts")
    );

    // The origin returns: the edge fails back to it.
    std::thread::sleep(Duration::from_secs(3));
    let (origin, push) = start_origin(&h, oroot.path());
    let back = Instant::now();
    let again = edge
        .wait_line(
            &format!("connected srt://{target}"),
            back,
            Duration::from_secs(30),
        )
        .expect("the edge fails back to the origin");
    eprintln!(
        "edge: failback {} ms after the origin came back",
        (again - back).as_millis()
    );
    let w = report(watcher);
    assert_eq!(w[0]["status"], 201, "{:?}", w);
    // 20 s through a failover and a failback: the picture went on (slate, then origin).
    assert!(w[0]["frames"].as_u64().unwrap() >= 20 * 10, "{:?}", w);
    eprintln!(
        "edge: longest wait between frames through failover and failback: {} s",
        w[0]["max_gap_after_1s"]
    );
    if let Some((r, mut out)) = relay {
        let _ = Command::new("kill")
            .args(["-TERM", &r.0.id().to_string()])
            .status();
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        // RELAYED forwarded back dropped
        let n: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if n.len() == 3 {
            eprintln!(
                "edge: relay forwarded {} and {} datagrams, dropped {} ({:.2} %)",
                n[0],
                n[1],
                n[2],
                100.0 * n[2] / (n[0] + n[1] + n[2])
            );
            assert!(n[2] > 0.0, "the relay dropped datagrams: {line}");
        }
    }
    drop((origin, push, edge));
}

#[test]
fn origin_to_edge_over_rtmp() {
    let Some(Setup {
        h,
        py,
        oroot,
        eroot,
    }) = setup("r")
    else {
        return;
    };
    let (_origin, _push) = start_origin(&h, oroot.path());
    let primary = format!("rtmp://{}:1935/live/cam1?token={TOKEN}", h.origin_ip);
    let t0 = Instant::now();
    let edge = serve_in(
        &h.edge,
        eroot.path(),
        &edge_config(&primary, eroot.path()),
        &["--http", "127.0.0.1:8080", "--rtmp", "off", "--srt", "off"],
    );
    edge.wait_line(
        &format!("connected rtmp://{}:1935/live/cam1", h.origin_ip),
        t0,
        Duration::from_secs(30),
    )
    .expect("the edge pulls the origin over RTMP");
    assert!(!edge.text().contains(TOKEN), "{}", edge.text());
    let vs = report(viewers_in(
        &h.edge,
        &py,
        "http://127.0.0.1:8080/whep/cam1",
        1,
        8.0,
    ));
    assert_eq!(vs[0]["status"], 201, "{vs:?}");
    assert!(vs[0]["frames"].as_u64().unwrap() >= 8 * 20, "{vs:?}");
    assert!(vs[0]["max_gap_after_1s"].as_f64().unwrap() < 0.5, "{vs:?}");
}
