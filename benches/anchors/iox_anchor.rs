//! iceoryx2 as a writer or a reader process of `benches/frame_ring.rs`, speaking its child
//! protocol (`key=value` arguments, `ready`, `go`, one `result` line) with the same source
//! frames, pacing, page touch, in-place fill and tally (`benches/common/frames.rs`).
//!
//! Publish-subscribe over `[u8]` slices with safe overflow (the writer never waits: a full
//! subscriber queue drops its oldest sample, as the frame ring lets a slow reader skip), and an
//! event service whose listener wakes the readers (the publisher notifies after each send).
//! Each sample carries the send time (CLOCK_MONOTONIC, bytes 0..8, stamped after the copy or
//! fill, as framecache's `publish_ns`) and the frame number (8..16), from which a reader counts
//! the frames it never got.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::frames::*;
use common::*;
use iceoryx2::prelude::*;

/// Frame number of the end marker the writer sends last.
const END: u64 = u64::MAX;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.get(1).map(String::as_str),
        Some(CHILD_ARG),
        "a frame_ring bench child"
    );
    let kv = parse_kv(args[2..].iter().map(String::as_str));
    set_log_level(LogLevel::Error);
    match get::<String>(&kv, "role").as_str() {
        "writer" => writer(&kv),
        "reader" => reader(&kv),
        r => panic!("unknown role {r}"),
    }
}

fn names(kv: &Kv) -> (ServiceName, ServiceName) {
    let s: String = get(kv, "service");
    let frames = format!("{s}/frames");
    let wake = format!("{s}/wake");
    (
        frames.as_str().try_into().expect("service name"),
        wake.as_str().try_into().expect("event name"),
    )
}

/// Samples each subscriber can queue: the frame ring's depth shared out over the readers (so
/// both hold about as much memory), at least 2.
fn queue(kv: &Kv) -> usize {
    let depth: usize = get(kv, "depth");
    let readers: usize = get(kv, "readers");
    (depth / readers.max(1)).max(2)
}

fn writer(kv: &Kv) {
    let (size, n): (usize, u64) = (get(kv, "size"), get(kv, "frames"));
    let fill = get::<String>(kv, "transport") == "ioxzc";
    let readers: usize = get(kv, "readers");
    let (frames, wake) = names(kv);
    let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
    let service = node
        .service_builder(&frames)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(true)
        .history_size(0)
        .subscriber_max_buffer_size(queue(kv))
        .subscriber_max_borrowed_samples(2)
        .max_subscribers(readers.max(1))
        .max_publishers(1)
        .create()
        .expect("publish-subscribe service");
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(2)
        .create()
        .expect("publisher");
    let event = node
        .service_builder(&wake)
        .event()
        .max_listeners(readers.max(1))
        .max_notifiers(1)
        .create()
        .expect("event service");
    let notifier = event.notifier_builder().create().expect("notifier");
    let srcs = if fill { Vec::new() } else { sources(size) };
    say("ready");
    wait_go();
    // The readers connect while the parent waits for their `ready`; take the connections in
    // before the first sample so that none is lost to a late connection.
    let (c0, t0) = (cpu_ns(), mono_ns());
    let pacer = Pacer::new(kv, t0);
    let mut written = 0u64;
    while written < n && pacer.next(written) {
        let mut sample = publisher.loan_slice_uninit(size).expect("loan");
        let p = sample.payload_mut().as_mut_ptr() as *mut u8;
        // SAFETY: the loan is `size` bytes; every byte is written before assume_init.
        let sample = unsafe {
            if fill {
                fill_in_place(p, size, written);
            } else {
                std::ptr::copy_nonoverlapping(
                    srcs[written as usize % srcs.len()].as_ptr(),
                    p,
                    size,
                );
            }
            std::ptr::copy_nonoverlapping(mono_ns().to_le_bytes().as_ptr(), p, 8);
            std::ptr::copy_nonoverlapping(written.to_le_bytes().as_ptr(), p.add(8), 8);
            sample.assume_init()
        };
        sample.send().expect("send");
        notifier.notify().expect("notify");
        written += 1;
    }
    let (t1, c1) = (mono_ns(), cpu_ns());
    let mut end = publisher.loan_slice_uninit(16).expect("loan");
    let p = end.payload_mut().as_mut_ptr() as *mut u8;
    // SAFETY: 16 bytes, all written.
    let end = unsafe {
        std::ptr::write_bytes(p, 0, 8);
        std::ptr::copy_nonoverlapping(END.to_le_bytes().as_ptr(), p.add(8), 8);
        end.assume_init()
    };
    end.send().expect("send end");
    notifier.notify().expect("notify");
    say(&format!(
        "result start_ns={t0} end_ns={t1} frames={written} cpu_ns={}",
        c1 - c0
    ));
    // Keep the service up until the parent closes our stdin (every reader has finished).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn reader(kv: &Kv) {
    let n: u64 = get(kv, "frames");
    let hold_ms: u64 = get(kv, "hold_ms");
    let (frames, wake) = names(kv);
    let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
    // The parent starts readers after the writer made the services; retry anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    let service = loop {
        match node
            .service_builder(&frames)
            .publish_subscribe::<[u8]>()
            .open()
        {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("open service: {e:?}"),
        }
    };
    let subscriber = service.subscriber_builder().create().expect("subscriber");
    let event = node
        .service_builder(&wake)
        .event()
        .open()
        .expect("event service");
    let listener = event.listener_builder().create().expect("listener");
    let mut t = ReaderTally {
        lat: Vec::with_capacity(n.min(1 << 20) as usize),
        ..Default::default()
    };
    say("ready");
    let c0 = cpu_ns();
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut next = 0u64;
    'run: loop {
        while let Some(sample) = subscriber.receive().expect("receive") {
            let now = mono_ns();
            let d = sample.payload();
            let seq = u64::from_le_bytes(d[8..16].try_into().unwrap());
            if seq == END {
                break 'run;
            }
            touch(d);
            if hold_ms > 0 {
                // A slow consumer keeps the sample while it works.
                std::thread::sleep(Duration::from_millis(hold_ms));
            }
            t.skipped += seq.saturating_sub(next);
            next = seq + 1;
            t.delivered += 1;
            t.last_ns = now;
            t.lat
                .push(now.saturating_sub(u64::from_le_bytes(d[..8].try_into().unwrap())));
            if next >= n {
                break 'run;
            }
        }
        assert!(Instant::now() < give_up, "no end marker within 120 s");
        // Wake-ups are counted, so one that came between receive() and here is not lost.
        listener
            .timed_wait(|_| {}, Duration::from_millis(100))
            .expect("wait");
    }
    let cpu = cpu_ns() - c0;
    t.report(get(kv, "warmup"), cpu);
}
