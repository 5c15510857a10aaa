//! The CLI's packet-slot commands: `import` (MPEG-TS file → packet slot), `export` (packet
//! slot → MPEG-TS file), the synthetic `testsrc --packets`, `verify` of such a slot, and the
//! packet rows of `ls` and `stat`.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use framecache::packet::*;
use framecache::ts::{self, Codec, Demuxer, Event};
use framecache::{testsrc, Error};

use crate::{CliResult, STOP};

/// Demuxes an MPEG-TS file into packet slot `id`: one stream per elementary stream (timebase
/// 1/90000), codec parameters from the stream (SPS/PPS, AudioSpecificConfig), keyframe flags.
/// Events are buffered until every stream has shown its parameters or a unit, because the
/// stream table (with sizes and rates) is fixed when the slot is created.
pub fn import(file: &str, id: &str, realtime: bool, keep: bool, payload_mb: u64) -> CliResult {
    let mut input = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let mut demux = Demuxer::new();
    let mut pending: Vec<Event> = Vec::new();
    let mut writer: Option<(PacketWriter, HashMap<u16, u32>)> = None;
    let mut chunk = vec![0u8; 188 * 1024];
    let (mut units, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let mut first_dts: Option<i64> = None;
    let mut eof = false;
    while !eof && !STOP.load(Ordering::Relaxed) {
        let n = std::io::Read::read(&mut input, &mut chunk)?;
        let events = if n == 0 {
            eof = true;
            demux.flush()
        } else {
            demux.push(&chunk[..n])
        };
        pending.extend(events);
        if writer.is_none() {
            if !(eof || ready(&pending)) {
                continue;
            }
            writer = Some(create_from(&pending, id, keep, payload_mb)?);
        }
        let (w, index) = writer.as_mut().expect("created above");
        for ev in pending.drain(..) {
            match ev {
                Event::Params { pid, data, .. } => {
                    if let Some(&i) = index.get(&pid) {
                        w.set_codec_params(i, &data)?;
                    }
                }
                Event::Unit(u) => {
                    let Some(&i) = index.get(&u.pid) else {
                        continue;
                    };
                    let dts = u.dts.unwrap_or(FC_NOPTS);
                    if realtime && dts != FC_NOPTS {
                        let first = *first_dts.get_or_insert(dts);
                        let due =
                            start + Duration::from_micros(((dts - first).max(0) as u64) * 100 / 9);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let mut flags = if u.keyframe { FC_PACKET_KEYFRAME } else { 0 };
                    if u.discontinuity {
                        flags |= FC_PACKET_DISCONTINUITY;
                    }
                    if u.data.is_empty() {
                        continue;
                    }
                    let pts = u.pts.unwrap_or(FC_NOPTS);
                    match w.publish(&Packet {
                        stream: i,
                        pts,
                        dts,
                        flags,
                        data: &u.data,
                    }) {
                        Ok(_) => units += 1,
                        Err(e @ Error::Oversized { .. }) => {
                            eprintln!("framecache: import: dropped a unit: {e}");
                            errors += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Event::Error(e) => {
                    errors += 1;
                    eprintln!("framecache: import: {file}: {e}");
                }
                Event::Streams(_) => {}
            }
        }
    }
    let Some((w, _)) = writer else {
        return Err(format!("{file}: no MPEG-TS program with streams found").into());
    };
    eprintln!(
        "framecache: imported {units} packets from {file} into {} ({errors} errors)",
        w.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether enough is known to create the slot: every stream announced has shown parameters
/// (if it has any) or data, or a lot has been buffered.
fn ready(events: &[Event]) -> bool {
    let Some(streams) = events.iter().rev().find_map(|e| match e {
        Event::Streams(s) => Some(s),
        _ => None,
    }) else {
        return false;
    };
    let seen = |pid: u16, params: bool| {
        events.iter().any(|e| match e {
            Event::Params { pid: p, .. } => params && *p == pid,
            Event::Unit(u) => u.pid == pid,
            _ => false,
        })
    };
    let needs_params = |c: Codec| matches!(c, Codec::H264 | Codec::Hevc | Codec::Aac);
    events.len() > 4000
        || streams
            .iter()
            .all(|s| seen(s.pid, needs_params(s.codec)) && seen(s.pid, false))
}

/// The stream table of a demuxed MPEG-TS input (at most [`MAX_STREAMS`] streams, timebase
/// 1/90000, sizes and rates from the codec parameters) and the stream index of each PID.
type StreamTable = (Vec<StreamConfig>, HashMap<u16, u32>);

fn stream_configs(events: &[Event]) -> Result<StreamTable, Box<dyn std::error::Error>> {
    let streams = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Streams(s) => Some(s.clone()),
            _ => None,
        })
        .ok_or("no streams in the input")?;
    let mut cfgs = Vec::new();
    let mut index = HashMap::new();
    for s in streams.iter().take(MAX_STREAMS) {
        let mut c = StreamConfig::new(s.codec.fc_codec());
        let params = events.iter().find_map(|e| match e {
            Event::Params { pid, data, .. } if *pid == s.pid => Some(data.as_slice()),
            _ => None,
        });
        match (s.codec, params) {
            (Codec::H264, Some(p)) => {
                if let Some(i) = ts::h264_sps_info(p) {
                    (c.width, c.height) = (i.width, i.height);
                    if let Some(fps) = i.fps {
                        c.fps = ((fps * 1000.0).round() as u32, 1000);
                    }
                }
            }
            (Codec::Aac, Some(p)) => {
                if let Some((rate, ch)) = ts::aac_config_info(p) {
                    (c.sample_rate, c.channels) = (rate, u32::from(ch));
                }
            }
            _ => {}
        }
        c.tag = format!("pid{}", s.pid);
        index.insert(s.pid, cfgs.len() as u32);
        cfgs.push(c);
    }
    Ok((cfgs, index))
}

fn create_from(
    events: &[Event],
    id: &str,
    keep: bool,
    payload_mb: u64,
) -> Result<(PacketWriter, HashMap<u16, u32>), Box<dyn std::error::Error>> {
    let (cfgs, index) = stream_configs(events)?;
    let mut cfg = PacketSlotConfig::new(cfgs);
    cfg.payload_size = payload_mb << 20;
    cfg.source_type = "ts-file".into();
    cfg.keep_on_close = keep;
    Ok((PacketWriter::create(id, &cfg)?, index))
}

/// One step of a demuxed MPEG-TS file, in file order.
pub enum TsItem {
    /// New codec parameters of a stream.
    Params(u32, Vec<u8>),
    /// An access unit: stream, pts, dts, `FC_PACKET_*` flags, payload.
    Unit(u32, i64, i64, u32, Vec<u8>),
}

/// A whole MPEG-TS file demuxed in memory: its stream table and its parameters and units in
/// order (the encoded stream `cuframes publish --packets` puts beside its frames).
pub fn read_ts_file(
    file: &str,
) -> Result<(Vec<StreamConfig>, Vec<TsItem>), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let mut demux = Demuxer::new();
    let mut events = demux.push(&bytes);
    events.extend(demux.flush());
    let (cfgs, index) = stream_configs(&events)?;
    let mut items = Vec::new();
    for ev in events {
        match ev {
            Event::Params { pid, data, .. } => {
                if let Some(&i) = index.get(&pid) {
                    items.push(TsItem::Params(i, data));
                }
            }
            Event::Unit(u) if !u.data.is_empty() => {
                let Some(&i) = index.get(&u.pid) else {
                    continue;
                };
                let flags = if u.keyframe { FC_PACKET_KEYFRAME } else { 0 };
                items.push(TsItem::Unit(
                    i,
                    u.pts.unwrap_or(FC_NOPTS),
                    u.dts.unwrap_or(FC_NOPTS),
                    flags,
                    u.data,
                ));
            }
            _ => {}
        }
    }
    Ok((cfgs, items))
}

/// Reads packet slot `id` and writes its streams as an MPEG-TS file, until the writer is gone
/// (and nothing is left), `limit` packets were written, or nothing came for `timeout_ms`.
pub fn export(
    id: &str,
    out: &str,
    limit: Option<u64>,
    timeout_ms: u64,
    from_oldest: bool,
) -> CliResult {
    let start = if from_oldest {
        PacketStart::OldestKeyframe
    } else {
        PacketStart::Keyframe
    };
    let mut r = framecache::ingest::egress::SlotTs::open(&framecache::slot::root_dir(), id, start)?;
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?);
    let mut written = 0u64;
    let timeout = Duration::from_millis(timeout_ms);
    let end = loop {
        if limit.is_some_and(|n| written >= n) || STOP.load(Ordering::Relaxed) {
            break "limit";
        }
        let bytes = match r.next(timeout) {
            Ok(b) => b,
            Err(Error::WriterGone) => break "writer gone",
            Err(Error::Timeout) => break "timeout",
            Err(e) => return Err(e.into()),
        };
        // Live: each packet leaves at once (a pipe reader such as serve's transcoder would
        // otherwise wait for 8 KiB, tens of ms of a small stream).
        match file.write_all(&bytes).and_then(|_| file.flush()) {
            Ok(()) => {}
            // The pipe's reader left (e.g. a transcoder that was stopped): an end, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break "reader gone",
            Err(e) => return Err(e.into()),
        }
        written += 1;
    };
    if end != "reader gone" {
        file.flush()?;
    }
    let st = r.stats();
    eprintln!(
        "framecache: exported {written} packets of {id} to {out} ({} skipped, ended by {end})",
        st.packets_skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of the synthetic packet source.
pub struct PacketSrcOpts {
    /// Packets per second (ignored when unpaced).
    pub rate: f64,
    /// Publish as fast as possible.
    pub unpaced: bool,
    /// Stop after this many packets.
    pub packets: Option<u64>,
    /// Largest packet in KiB.
    pub max_kb: usize,
    /// Payload ring in KiB.
    pub payload_kb: u64,
    /// Descriptors.
    pub descs: u32,
    /// Wait before the first packet, ms.
    pub wait_ms: u64,
    /// Keep the slot file on exit.
    pub keep: bool,
    /// Video keyframe interval in packets.
    pub gop: u64,
}

/// Publishes synthetic packets (see `testsrc::fill_packet`): stream 0 "video" with a keyframe
/// every `gop` packets, stream 1 "audio" every third packet. The payloads are test patterns,
/// not decodable media: the slot's source type says `testsrc`.
pub fn testsrc_packets(id: &str, o: &PacketSrcOpts) -> CliResult {
    let mut video = StreamConfig::new(FC_CODEC_H264);
    video.tag = "synthetic".into();
    let mut audio = StreamConfig::new(FC_CODEC_AAC);
    audio.tag = "synthetic".into();
    let mut cfg = PacketSlotConfig::new(vec![video, audio]);
    cfg.payload_size = o.payload_kb << 10;
    cfg.desc_count = o.descs;
    cfg.source_type = "testsrc".into();
    cfg.keep_on_close = o.keep;
    let mut w = PacketWriter::create(id, &cfg)?;
    let max = (o.max_kb << 10).min(w.layout().max_packet as usize);
    eprintln!(
        "framecache: testsrc → packet slot {id} ({})",
        w.path().display()
    );
    std::thread::sleep(Duration::from_millis(o.wait_ms));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / o.rate.max(0.001));
    let mut buf = vec![0u8; max];
    let mut seq = 0u64;
    while o.packets.is_none_or(|n| seq < n) && !STOP.load(Ordering::Relaxed) {
        if !o.unpaced {
            if let Some(wait) =
                (start + period.mul_f64(seq as f64)).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
        let size = testsrc::packet_size(seq, max);
        testsrc::fill_packet(seq, &mut buf[..size]);
        let stream = if seq % 3 == 2 { 1 } else { 0 };
        let flags = if stream == 0 && seq.is_multiple_of(o.gop) {
            FC_PACKET_KEYFRAME
        } else {
            0
        };
        let t = seq as i64 * 3000;
        w.publish(&Packet {
            stream,
            pts: t,
            dts: t,
            flags,
            data: &buf[..size],
        })?;
        seq += 1;
    }
    eprintln!(
        "framecache: testsrc published {seq} packets in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a `testsrc --packets` slot and checks every payload against its sequence number.
pub fn verify(
    id: &str,
    limit: Option<u64>,
    copy: bool,
    timeout_ms: u64,
    wait_ms: u64,
    delay_us: u64,
    json: bool,
) -> CliResult {
    let wait_until = Instant::now() + Duration::from_millis(wait_ms);
    let mut r = loop {
        match PacketReader::open(
            id,
            PacketReaderConfig {
                start: PacketStart::OldestKeyframe,
            },
        ) {
            Err(Error::NoPacketRing(_)) if Instant::now() < wait_until => {
                std::thread::sleep(Duration::from_millis(5))
            }
            res => break res?,
        }
    };
    let timeout = Duration::from_millis(timeout_ms);
    let (mut good, mut corrupt, mut torn, mut overruns, mut out_of_order, mut mid_gop) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last: Option<u64> = None;
    let mut epochs = 0u64;
    let mut buf = Vec::new();
    let end = loop {
        if limit.is_some_and(|n| good + corrupt >= n) {
            break "packets";
        }
        let (info, ok) = if copy {
            match r.next_copy(&mut buf, timeout) {
                Ok(i) => (i, testsrc::packet_ok(i.seq, &buf[..i.size as usize])),
                Err(Error::BufferTooSmall { need, .. }) => {
                    buf.resize(need, 0);
                    continue;
                }
                Err(Error::PacketOverrun) => {
                    overruns += 1;
                    continue;
                }
                Err(Error::WriterGone) => break "writer-gone",
                Err(Error::Timeout) => break "timeout",
                Err(e) => return Err(e.into()),
            }
        } else {
            match r.next(timeout) {
                Ok(v) => {
                    let ok = testsrc::packet_ok(v.info.seq, v.data());
                    let (info, intact) = (v.info, v.is_intact());
                    if !intact {
                        // Overwritten while we looked: drop it and go to the next keyframe.
                        torn += 1;
                        r.overrun(&info);
                        continue;
                    }
                    (info, ok)
                }
                Err(Error::WriterGone) => break "writer-gone",
                Err(Error::Timeout) => break "timeout",
                Err(e) => return Err(e.into()),
            }
        };
        // A re-attach to a restarted writer starts its numbering again.
        let reattached = r.stats().reattached;
        if reattached != epochs {
            epochs = reattached;
            last = None;
        }
        if last.is_some_and(|l| info.seq <= l) {
            out_of_order += 1;
        }
        // After a skip the reader must land on a video keyframe, never mid-GOP.
        if info.skipped > 0 && !(info.stream == 0 && info.flags & FC_PACKET_KEYFRAME != 0) {
            mid_gop += 1;
        }
        last = Some(info.seq);
        if ok {
            good += 1;
        } else {
            corrupt += 1;
        }
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
    };
    let s = r.stats();
    let ok = corrupt == 0 && out_of_order == 0 && mid_gop == 0 && good > 0;
    let result = serde_json::json!({"slot": id, "ok": ok, "end": end, "good": good, "corrupt": corrupt,
        "torn_views": torn, "overruns": overruns, "out_of_order": out_of_order, "mid_gop": mid_gop,
        "last_seq": last, "stats": s});
    if json {
        println!("{result}");
    } else {
        println!(
            "{id}: {good} good packets, {corrupt} corrupt, {out_of_order} out of order, {mid_gop} mid-GOP joins, {} skipped, ended by {end}",
            s.packets_skipped
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `ls --json` entries of packet slots.
pub fn ls_rows(root: &std::path::Path) -> Result<Vec<serde_json::Value>, Error> {
    Ok(list_slots(root)?
        .into_iter()
        .map(|(id, r)| match r {
            Ok(i) => {
                let bytes = crate::slot_bytes(root, &id, framecache::slot::SlotKind::Packets);
                serde_json::json!({"kind": "packets", "info": i, "bytes": bytes})
            }
            Err(e) => serde_json::json!({"kind": "packets", "id": id, "error": e.to_string(), "code": e.code()}),
        })
        .collect())
}

/// One line per packet slot for the `ls` table, and the bytes they take.
pub fn ls_table(root: &std::path::Path) -> Result<(Vec<String>, u64), Error> {
    let mut total = 0;
    let rows = list_slots(root)?
        .into_iter()
        .map(|(id, r)| {
            let bytes = crate::slot_bytes(root, &id, framecache::slot::SlotKind::Packets);
            total += bytes;
            match r {
                Ok(i) => {
                    let codecs: Vec<&str> = i.streams.iter().map(|s| s.codec_name).collect();
                    let video = i.streams.iter().find(|s| s.width > 0);
                    format!(
                        "{:<24} {:<7} {:<10} {:>11} {:>9} {:>5} {:>10} {:>9} {:<12} {:<8} {}",
                        i.id,
                        "packets",
                        codecs.join("+"),
                        video
                            .map(|v| format!("{}x{}", v.width, v.height))
                            .unwrap_or_else(|| "-".into()),
                        video
                            .filter(|v| v.fps.0 > 0)
                            .map(|v| format!("{:.2}", f64::from(v.fps.0) / f64::from(v.fps.1)))
                            .unwrap_or_else(|| "-".into()),
                        "-",
                        i.packets_written,
                        crate::mib(bytes),
                        if i.writer_alive {
                            format!("live {}", i.writer_pid)
                        } else {
                            "gone".into()
                        },
                        i.source_type,
                        crate::ago(i.last_publish_ns)
                    )
                }
                Err(e) => format!("{id:<24} {:<7} unreadable: {e}", "packets"),
            }
        })
        .collect();
    Ok((rows, total))
}

/// Live statistics of a packet slot: per-interval packets/s, bitrate, keyframe interval seen,
/// and this reader's lag.
pub fn stat(id: &str, once: bool, interval_ms: u64, json: bool) -> CliResult {
    let mut r = PacketReader::open(
        id,
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )?;
    let interval = Duration::from_millis(interval_ms.max(50));
    let streams = r.streams();
    let primary = r.layout().primary_stream;
    loop {
        let t0 = Instant::now();
        let (p0, b0) = (r.writer_packets(), r.bytes_published());
        let mut keyframes: Vec<u64> = Vec::new();
        while t0.elapsed() < interval && !STOP.load(Ordering::Relaxed) {
            match r.next(interval.saturating_sub(t0.elapsed())) {
                Ok(v) => {
                    if v.info.stream == primary && v.info.flags & FC_PACKET_KEYFRAME != 0 {
                        keyframes.push(v.info.seq);
                    }
                }
                Err(Error::Timeout) | Err(Error::WriterGone) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let s = r.stats();
        let pps = (r.writer_packets() - p0) as f64 / secs;
        let kbps = (r.bytes_published() - b0) as f64 * 8.0 / secs / 1000.0;
        let gop = (keyframes.len() >= 2).then(|| {
            (keyframes[keyframes.len() - 1] - keyframes[0]) as f64 / (keyframes.len() - 1) as f64
        });
        if json {
            println!(
                "{}",
                serde_json::json!({"slot": id, "streams": streams, "packets_per_s": pps, "kbit_per_s": kbps,
                    "keyframe_interval_packets": gop, "writer_alive": s.writer_alive, "writer_packets": s.writer_packets,
                    "reader_lag": s.lag, "skipped": s.packets_skipped, "latency_last_us": s.latency_last_ns / 1000})
            );
        } else {
            let names: Vec<String> = streams
                .iter()
                .map(|s| match s.media {
                    FC_MEDIA_VIDEO => {
                        format!("#{} {} {}x{}", s.index, s.codec_name, s.width, s.height)
                    }
                    FC_MEDIA_AUDIO => format!(
                        "#{} {} {} Hz {} ch",
                        s.index, s.codec_name, s.sample_rate, s.channels
                    ),
                    _ => format!("#{} {}", s.index, s.codec_name),
                })
                .collect();
            println!(
                "packet slot {id}  {}\nwriter  {}  packets {}  {pps:.1} packets/s  {kbps:.0} kbit/s  keyframe every {}\nreader  lag {}  skipped {}  latency last {:.1} µs",
                names.join(", "),
                if s.writer_alive { "live" } else { "GONE" },
                s.writer_packets,
                gop.map(|g| format!("{g:.1} packets")).unwrap_or_else(|| "?".into()),
                s.lag,
                s.packets_skipped,
                s.latency_last_ns as f64 / 1e3
            );
        }
        if once || STOP.load(Ordering::Relaxed) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
