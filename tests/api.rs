//! The operator's control API of `framecache serve`, driven with curl: every call of
//! `docs/openapi.json` is made, its status must be one the document lists for it, and the
//! required fields of its answer must be there. Bad JSON (400 naming the field), unknown ids
//! (404), missing and wrong tokens (401), the API switched off (403); runtime inputs and keys,
//! ending a publisher and a viewer, and a reload (POST and SIGHUP) that leaves an unchanged
//! live stream alone.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{have, skip, wait_for, Reaper, TempRoot};
use serde_json::Value;

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-abc";

struct Serve {
    child: Reaper,
    http: String,
    rtmp: String,
    said: Arc<Mutex<String>>,
}

fn serve(root: &TempRoot, cfg: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_framecache"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--rtmp",
            "127.0.0.1:0",
            "--srt",
            "off",
        ])
        .args(["--no-demo", "--config"])
        .arg(cfg)
        .env("FC_SHM_DIR", root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let said = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (said, tx) = (said.clone(), tx.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{l}");
                said.lock().unwrap().push_str(&format!("{l}\n"));
                let _ = tx.send(l);
            }
        });
    }
    let (mut http, mut rtmp) = (None, None);
    while http.is_none() || rtmp.is_none() {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("serve started");
        if let Some(r) = l.strip_prefix("listening http http://") {
            http = Some(r.split('/').next().unwrap().to_string());
        }
        if let Some(r) = l.strip_prefix("listening rtmp rtmp://") {
            rtmp = Some(r.split('/').next().unwrap().to_string());
        }
    }
    Serve {
        child: Reaper(child),
        http: http.unwrap(),
        rtmp: rtmp.unwrap(),
        said,
    }
}

/// Every (method, path template) of the OpenAPI document and its documented statuses.
fn operations(doc: &Value) -> HashMap<(String, String), BTreeSet<u16>> {
    let mut ops = HashMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let codes = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|c| c.parse().unwrap())
                .collect();
            ops.insert((method.to_uppercase(), path.clone()), codes);
        }
    }
    ops
}

/// The schema `s`, `$ref`s resolved.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let mut v = doc;
            for p in r.trim_start_matches("#/").split('/') {
                v = &v[p];
            }
            resolve(doc, v)
        }
        None => s,
    }
}

/// Checks `body` against `schema`'s required properties, recursively through arrays.
fn check_shape(doc: &Value, schema: &Value, body: &Value, at: &str) {
    let s = resolve(doc, schema);
    if let Some(all) = s["allOf"].as_array() {
        if !body.is_null() {
            for a in all {
                check_shape(doc, a, body, at);
            }
        }
        return;
    }
    if let Some(req) = s["required"].as_array() {
        for r in req {
            let k = r.as_str().unwrap();
            assert!(body.get(k).is_some(), "{at}: answer without `{k}`: {body}");
        }
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, p) in props {
            if let Some(v) = body.get(k) {
                if !v.is_null() {
                    check_shape(doc, p, v, &format!("{at}.{k}"));
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), body.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_shape(doc, items, v, &format!("{at}[{i}]"));
        }
    }
}

struct Client<'a> {
    http: &'a str,
    doc: &'a Value,
    ops: HashMap<(String, String), BTreeSet<u16>>,
    called: BTreeSet<(String, String)>,
}

impl Client<'_> {
    /// curl `method path` with `token` and a JSON `body`; checks the answer against the
    /// operation `template` of the document; returns the status and the JSON body.
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "20",
            "-X",
            method,
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = c
            .arg(format!("http://{}{path}", self.http))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status: u16 = code.trim().parse().unwrap_or(0);
        let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let key = (method.to_string(), template.to_string());
        if let Some(codes) = self.ops.get(&key) {
            assert!(
                codes.contains(&status),
                "{method} {path}: {status} is not among the documented {codes:?}: {body}"
            );
            self.called.insert(key);
            let op = &self.doc["paths"][template][method.to_lowercase()];
            let schema = &op["responses"][status.to_string()];
            let schema = resolve(self.doc, schema);
            if let Some(s) = schema["content"]["application/json"].get("schema") {
                check_shape(self.doc, s, &json, &format!("{method} {path} {status}"));
            }
        }
        (status, json)
    }
}

fn stream<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["streams"].as_array()?.iter().find(|s| s["id"] == id)
}

fn config(media: &Path, extra: &str) -> String {
    format!(
        "[api]\ntoken = \"{OPERATOR}\"\n[whep]\ntoken = \"{VIEWER}\"\n[mounts]\nmedia = {:?}\n\n\
         [[keys]]\nkey = \"cam1\"\n{extra}",
        media.display().to_string()
    )
}

#[test]
fn control_api_against_its_openapi_description() {
    if !have("curl") || !have("ffmpeg") {
        skip("needs curl and ffmpeg (apt install curl ffmpeg)");
        return;
    }
    let root = TempRoot::new("api");
    let media: PathBuf = root.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine",
        ])
        .args([
            "-t",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
        ])
        .args(["-g", "30", "-c:a", "aac", "-f", "mpegts", "-y"])
        .arg(media.join("clip.ts"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let cfg = root.path().join("serve.toml");
    std::fs::write(&cfg, config(&media, "")).unwrap();
    let s = serve(&root, &cfg);
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let mut c = Client {
        http: &s.http,
        doc: &doc,
        ops: operations(&doc),
        called: BTreeSet::new(),
    };
    let op = Some(OPERATOR);

    // The description, served as checked in.
    let (st, served) = c.call(
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        None,
    );
    assert_eq!((st, &served), (200, &doc));

    // Tokens: none, wrong, the viewer's: 401.
    for t in [None, Some("wrong-token-wrong-token"), Some(VIEWER)] {
        assert_eq!(
            c.call("GET", "/api/v1/streams", "/api/v1/streams", t, None)
                .0,
            401
        );
        assert_eq!(
            c.call("POST", "/api/v1/inputs", "/api/v1/inputs", t, Some("{}"))
                .0,
            401
        );
        assert_eq!(
            c.call("DELETE", "/api/v1/keys/{key}", "/api/v1/keys/cam1", t, None)
                .0,
            401
        );
    }
    let (st, list) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
    assert_eq!(st, 200);
    assert_eq!(stream(&list, "cam1").unwrap()["keys"][0], "cam1", "{list}");

    // A live push on cam1, to see it survive the reloads below.
    let push = |key: &str| {
        Reaper(
            Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "quiet",
                    "-re",
                    "-stream_loop",
                ])
                .args(["-1", "-i"])
                .arg(media.join("clip.ts"))
                .args(["-c", "copy", "-bsf:a", "aac_adtstoasc", "-f", "flv"])
                .arg(format!("rtmp://{}/live/{key}", s.rtmp))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _cam1 = push("cam1");
    let publisher = |c: &mut Client, id: &str| {
        let (_, l) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
        stream(&l, id)
            .map(|s| s["publisher"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for("cam1 published", Duration::from_secs(20), || {
        publisher(&mut c, "cam1")["protocol"] == "rtmp"
    });
    let cam1_since = publisher(&mut c, "cam1")["since_ms"].clone();

    // Inputs: bad bodies name their field.
    for (body, field) in [
        ("not json", "body"),
        ("[1]", "body"),
        (r#"{"urls": ["file://media/clip.ts"]}"#, "slot"),
        (
            r#"{"slot": "bad slot!", "urls": ["file://media/clip.ts"]}"#,
            "slot",
        ),
        (r#"{"slot": "pulled"}"#, "urls"),
        (r#"{"slot": "pulled", "urls": []}"#, "urls"),
        (r#"{"slot": "pulled", "urls": [3]}"#, "urls"),
        (r#"{"slot": "pulled", "urls": ["nonsense"]}"#, "urls"),
        (
            r#"{"slot": "pulled", "urls": ["file://media/clip.ts"], "timeout_ms": -5}"#,
            "timeout_ms",
        ),
    ] {
        let (st, j) = c.call("POST", "/api/v1/inputs", "/api/v1/inputs", op, Some(body));
        assert_eq!((st, j["field"].as_str()), (400, Some(field)), "{body}: {j}");
    }
    let add = r#"{"slot": "pulled", "urls": ["file://media/clip.ts"], "timeout_ms": 2000}"#;
    assert_eq!(
        c.call("POST", "/api/v1/inputs", "/api/v1/inputs", op, Some(add))
            .0,
        201
    );
    assert_eq!(
        c.call("POST", "/api/v1/inputs", "/api/v1/inputs", op, Some(add))
            .0,
        200,
        "replaced"
    );
    wait_for("pulled live", Duration::from_secs(20), || {
        publisher(&mut c, "pulled")["protocol"] == "file"
    });

    // A WebRTC viewer of it (an offer without candidates: answered, never connects), listed
    // and ended by id.
    let common = "c=IN IP4 0.0.0.0\r\na=ice-ufrag:Fx1q\r\na=ice-pwd:p4Zkq0w8u2Ym5Ly1dNh7Qa3c\r\n\
        a=fingerprint:sha-256 \
        4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1\r\n\
        a=setup:actpass\r\na=rtcp-mux\r\na=recvonly\r\n";
    let offer = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 102\r\n{common}a=mid:0\r\na=rtpmap:102 H264/90000\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{common}a=mid:1\r\na=rtpmap:111 opus/48000/2\r\n"
    );
    // (The replaced input's slot may be between its two writers for a moment: retried.)
    let mut id = None;
    let mut head = String::new();
    for _ in 0..50 {
        let o = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"])
            .args(["-H", "Content-Type: application/sdp"])
            .args(["-H", &format!("Authorization: Bearer {VIEWER}")])
            .args(["--data-binary", &offer])
            .arg(format!("http://{}/whep/pulled", s.http))
            .output()
            .unwrap();
        head = String::from_utf8_lossy(&o.stdout).to_string();
        id = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("location:")
                .then(|| l.rsplit('/').next().unwrap().trim().to_string())
        });
        if id.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = id.unwrap_or_else(|| panic!("a viewer was answered: {head}"));
    let (_, l) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
    let viewers = stream(&l, "pulled").unwrap()["viewers"].clone();
    let v = viewers
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id.as_str());
    let v = v.unwrap_or_else(|| panic!("viewer {id} listed: {viewers}"));
    assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    // An RTMP play of the same stream, listed and ended by its id.
    let mut play = Reaper(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "quiet", "-i"])
            .arg(format!("rtmp://{}/live/pulled?token={VIEWER}", s.rtmp))
            .args(["-f", "null", "-"])
            .spawn()
            .unwrap(),
    );
    let mut play_id = String::new();
    wait_for("the RTMP play listed", Duration::from_secs(20), || {
        let (_, l) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
        let vs = stream(&l, "pulled").unwrap()["viewers"].clone();
        match vs
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["protocol"] == "rtmp")
        {
            Some(v) if v["bytes"].as_u64() > Some(0) => {
                assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
                play_id = v["id"].as_str().unwrap().to_string();
                true
            }
            _ => false,
        }
    });
    let path = format!("/api/v1/viewers/{play_id}");
    assert_eq!(
        c.call("DELETE", "/api/v1/viewers/{id}", &path, op, None).0,
        200
    );
    wait_for("the play ended", Duration::from_secs(10), || {
        play.0.try_wait().unwrap().is_some()
    });
    assert_eq!(
        c.call("DELETE", "/api/v1/viewers/{id}", &path, op, None).0,
        404
    );
    let path = format!("/api/v1/viewers/{id}");
    assert_eq!(
        c.call("DELETE", "/api/v1/viewers/{id}", &path, op, None).0,
        200
    );
    assert_eq!(
        c.call("DELETE", "/api/v1/viewers/{id}", &path, op, None).0,
        404
    );
    // A key feeding the same slot goes with its inputs.
    let k = r#"{"key": "pulledkey", "slot": "pulled"}"#;
    assert_eq!(
        c.call("POST", "/api/v1/keys", "/api/v1/keys", op, Some(k))
            .0,
        201
    );
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/inputs/{slot}",
            "/api/v1/inputs/pulled",
            op,
            None
        )
        .0,
        200
    );
    let (_, l) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
    assert!(
        stream(&l, "pulled").is_none_or(|x| x["keys"].as_array().unwrap().is_empty()),
        "{l}"
    );
    let path = "/api/v1/keys/pulledkey";
    assert_eq!(
        c.call("DELETE", "/api/v1/keys/{key}", path, op, None).0,
        404
    );
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/inputs/{slot}",
            "/api/v1/inputs/pulled",
            op,
            None
        )
        .0,
        404
    );

    // Keys at run time; a publisher ended by the operator.
    for (body, field) in [
        (r#"{"slot": "x"}"#, "key"),
        (r#"{"key": "cam2", "passphrase": "short"}"#, "passphrase"),
        (r#"{"key": "cam2", "slot": 7}"#, "slot"),
        (r#"{"key": "bad key!"}"#, "key"),
    ] {
        let (st, j) = c.call("POST", "/api/v1/keys", "/api/v1/keys", op, Some(body));
        assert_eq!((st, j["field"].as_str()), (400, Some(field)), "{body}: {j}");
    }
    assert_eq!(
        c.call(
            "POST",
            "/api/v1/keys",
            "/api/v1/keys",
            op,
            Some(r#"{"key": "cam2"}"#)
        )
        .0,
        201
    );
    let mut cam2 = push("cam2");
    wait_for("cam2 published", Duration::from_secs(20), || {
        publisher(&mut c, "cam2")["protocol"] == "rtmp"
    });
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/publishers/{key}",
            "/api/v1/publishers/cam2",
            op,
            None
        )
        .0,
        200
    );
    wait_for("cam2's publisher gone", Duration::from_secs(20), || {
        publisher(&mut c, "cam2").is_null()
    });
    wait_for("ffmpeg ended", Duration::from_secs(10), || {
        cam2.0.try_wait().unwrap().is_some()
    });
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/publishers/{key}",
            "/api/v1/publishers/cam2",
            op,
            None
        )
        .0,
        404
    );
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/keys/{key}",
            "/api/v1/keys/cam2",
            op,
            None
        )
        .0,
        200
    );
    assert_eq!(
        c.call(
            "DELETE",
            "/api/v1/keys/{key}",
            "/api/v1/keys/cam2",
            op,
            None
        )
        .0,
        404
    );

    // Reload by POST: an input added in the file appears; cam1 (unchanged) keeps its publisher.
    std::fs::write(
        &cfg,
        config(
            &media,
            "\n[[inputs]]\nslot = \"fromfile\"\nurls = [\"file://media/clip.ts\"]\n",
        ),
    )
    .unwrap();
    let (st, r) = c.call("POST", "/api/v1/reload", "/api/v1/reload", op, None);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["added"], serde_json::json!(["input fromfile"]), "{r}");
    assert_eq!(r["unchanged"], 1, "{r}");
    wait_for("fromfile live", Duration::from_secs(20), || {
        publisher(&mut c, "fromfile")["protocol"] == "file"
    });
    // A broken file changes nothing.
    std::fs::write(&cfg, "[[keys]\n").unwrap();
    let (st, r) = c.call("POST", "/api/v1/reload", "/api/v1/reload", op, None);
    assert_eq!((st, r["field"].as_str()), (400, Some("config")), "{r}");
    // Reload by SIGHUP: the input is gone again.
    std::fs::write(&cfg, config(&media, "")).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &s.child.0.id().to_string()])
        .status();
    wait_for("fromfile removed", Duration::from_secs(20), || {
        let (_, l) = c.call("GET", "/api/v1/streams", "/api/v1/streams", op, None);
        stream(&l, "fromfile").is_none_or(|x| x["inputs"].is_null())
    });
    // (The list changes as the reload applies; its log line follows.)
    wait_for("the reload's log line", Duration::from_secs(10), || {
        s.said
            .lock()
            .unwrap()
            .contains("reloaded the configuration")
    });
    let p = publisher(&mut c, "cam1");
    assert_eq!(
        p["since_ms"], cam1_since,
        "cam1 was not touched by the reloads: {p}"
    );

    // Methods and paths the API does not have.
    assert_eq!(c.call("PUT", "-", "/api/v1/streams", op, None).0, 405);
    assert_eq!(c.call("GET", "-", "/api/v1/nothing", op, None).0, 404);
    // Every operation of the document was called.
    let all: BTreeSet<_> = c.ops.keys().cloned().collect();
    let missed: Vec<_> = all.difference(&c.called).collect();
    assert!(missed.is_empty(), "operations never called: {missed:?}");
    // No token in the output.
    let said = s.said.lock().unwrap().clone();
    assert!(!said.contains(OPERATOR) && !said.contains(VIEWER), "{said}");
    drop(s);

    // Without [api] token the API is off.
    std::fs::write(&cfg, format!("[whep]\ntoken = \"{VIEWER}\"\n")).unwrap();
    let off = serve(&root, &cfg);
    let mut c2 = Client {
        http: &off.http,
        doc: &doc,
        ops: operations(&doc),
        called: BTreeSet::new(),
    };
    assert_eq!(
        c2.call("GET", "/api/v1/streams", "/api/v1/streams", op, None)
            .0,
        403
    );
}
