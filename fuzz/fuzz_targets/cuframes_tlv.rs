//! Fuzzes what a cuframes peer reads from the other side: the socket's TLV stream, delivered in
//! arbitrary chunk sizes, and a control block's header. Errors are fine; a panic, a hang or an
//! accepted header that points outside the file is a bug.
#![no_main]

use framecache_cuda::layout::CuframesHeader;
use framecache_cuda::proto::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Socket stream: chunk size from the mode byte, as a slow socket would deliver it.
        let chunk = usize::from(mode >> 1).max(1);
        let mut d = Decoder::new();
        'outer: for c in rest.chunks(chunk) {
            d.push(c);
            loop {
                match d.next_msg() {
                    Ok(Some(m)) => {
                        // Whatever decodes must encode and decode to itself.
                        let b = m.to_bytes();
                        let mut again = Decoder::new();
                        again.push(&b);
                        assert_eq!(again.next_msg().unwrap(), Some(m));
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    } else if let Ok(h) = CuframesHeader::read(rest) {
        if let Ok(g) = h.validate(rest.len() as u64) {
            let n = u64::from(h.buffer_count);
            let m = u64::from(h.max_subscribers);
            assert!(u64::from(h.slots_offset) + n * u64::from(h.slot_desc_size) <= u64::from(h.subs_offset));
            assert!(u64::from(h.subs_offset) + m * u64::from(h.sub_slot_size) <= rest.len() as u64);
            assert!(g.frame_size <= h.buffer_size);
        }
    }
});
