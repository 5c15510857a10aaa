#!/usr/bin/env bash
# Coverage-guided fuzzing of the frame-header validation on a stable toolchain: the same
# instrumentation flags cargo-fuzz passes (sancov), without its nightly-only sanitizer option.
#   fuzz/run.sh [SECONDS] [TARGET]     (default 60 s, frame_header; also packet_header, cuframes_tlv,
#                                       flv_tag, ts_media, hls_http, rtmp_chunks, fmp4,
#                                       mp4_file, rtsp_session, whip_rtp)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
target=${2:-frame_header}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts, which cannot link the sancov hooks.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --quiet --target "$host" --target-dir target --bin "$target"
mkdir -p "corpus/$target" artifacts
# Seed with a real slot file so the fuzzer starts past the magic and version checks.
if [ "$target" = frame_header ] && [ -z "$(ls corpus/frame_header)" ]; then
  seed=$(mktemp -d)
  env -u RUSTFLAGS FC_SHM_DIR=$seed bash -c 'cd .. && cargo run --quiet -- testsrc seed --size 16x16 --depth 2 --frames 1 --unpaced --keep' >/dev/null 2>&1
  cp "$seed/seed.frames" corpus/frame_header/seed && rm -rf "$seed"
fi
# A valid RTSP session (SDP length, SDP, interleaved RTP) so rtsp_session starts past DESCRIBE.
if [ "$target" = rtsp_session ] && [ -z "$(ls corpus/rtsp_session 2>/dev/null)" ]; then
  mkdir -p corpus/rtsp_session
  env -u RUSTFLAGS bash -c 'cd .. && cargo run --quiet -p framecache-ingest --example rtsp_seed' > corpus/rtsp_session/seed
  env -u RUSTFLAGS bash -c 'cd .. && cargo run --quiet -p framecache-ingest --example rtsp_seed opus' > corpus/rtsp_session/seed-opus
fi
# A real H.264+AAC TS (cut byte first) so ts_media starts with PAT, PMT and PES to mutate.
if [ "$target" = ts_media ] && [ -z "$(ls corpus/ts_media)" ] && command -v ffmpeg >/dev/null; then
  t=$(mktemp -d)
  ffmpeg -loglevel error -f lavfi -i testsrc=size=64x64:rate=10 -f lavfi -i sine -t 1 \
    -c:v libx264 -g 5 -c:a aac -f mpegts "$t/s.ts"
  { printf '\x1b'; head -c 12000 "$t/s.ts"; } > corpus/ts_media/seed && rm -rf "$t"
fi
# ffmpeg's HLS fMP4 output (init segment length in two bytes, init, first segment) for fmp4.
if [ "$target" = fmp4 ] && [ -z "$(ls corpus/fmp4)" ] && command -v ffmpeg >/dev/null; then
  t=$(mktemp -d)
  ffmpeg -loglevel error -f lavfi -i testsrc=size=64x64:rate=10 -f lavfi -i sine -t 1 \
    -c:v libx264 -g 5 -c:a aac -f hls -hls_time 0.5 -hls_segment_type fmp4 \
    -hls_segment_filename "$t/s%d.m4s" "$t/i.m3u8"
  n=$(stat -c %s "$t/init.mp4")
  { printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8)))"; cat "$t/init.mp4" "$t/s0.m4s"; } \
    | head -c 16384 > corpus/fmp4/seed && rm -rf "$t"
fi
# A small progressive MP4 with B-frames (moov at the end) for mp4_file.
if [ "$target" = mp4_file ] && [ -z "$(ls corpus/mp4_file)" ] && command -v ffmpeg >/dev/null; then
  t=$(mktemp -d)
  ffmpeg -loglevel error -f lavfi -i testsrc=size=64x64:rate=10 -f lavfi -i sine -t 0.5 \
    -c:v libx264 -bf 2 -g 5 -c:a aac "$t/s.mp4"
  head -c 16384 "$t/s.mp4" > corpus/mp4_file/seed && rm -rf "$t"
fi
# A version-2 handshake as a subscriber reads it (READY, PACKET_RING, BYE), one byte per
# chunk, so cuframes_tlv starts with the packet ring's TLV to mutate.
if [ "$target" = cuframes_tlv ] && [ ! -e corpus/cuframes_tlv/seed-v2 ]; then
  { printf '\x02'
    printf '\x05\x00\x00\x00\x08\x00\x00\x00\x41\x00\x00\x00\x00\x00\x00\x00'
    printf '\x09\x00\x00\x00\x24\x00\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00'
    printf '\x02\x00\x00\x00\x14\x00\x00\x00cuframes-cam-packets'
    printf '\x07\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00'; } > corpus/cuframes_tlv/seed-v2
fi
# A real HLS playlist in an HTTP response (chunked) for hls_http.
if [ "$target" = hls_http ] && [ -z "$(ls corpus/hls_http)" ]; then
  pl=$'#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\nseg_007.ts\n#EXTINF:2.0,\n/live/seg_008.ts?t=1\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n#EXT-X-ENDLIST\n'
  printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n' "${#pl}" "$pl" > corpus/hls_http/seed
fi
"./target/$host/release/$target" -max_total_time="$secs" -max_len=16384 -artifact_prefix=artifacts/ \
  "corpus/$target" 2>&1 | tail -n 5
