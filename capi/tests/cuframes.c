/* cuframes from C.
 *   cuframes layout          print offset and size of every shared struct field
 *   cuframes nocuda          on a machine without CUDA: every CUDA-backend call is FC_ERR_NO_CUDA
 *   cuframes pub KEY N       host-backend publisher of N frames of 320x240 NV12 (pattern below),
 *                            after checking wrong use; prints "READY" once it serves, then waits
 *                            for a subscriber, publishes, and prints its counters
 *   cuframes sub KEY N       host-backend subscriber: takes N frames and checks every byte
 *   cuframes packets KEY     protocol version 2 in one process: a host-backend publisher with
 *                            an H.264 and an AAC stream beside its frames, a subscriber that
 *                            reads every packet back, and wrong use of every packet call
 * Pattern (docs/CUFRAMES.md test source): every byte of plane p of frame seq is
 * (7*seq + 61*p) mod 251. Exit 0 when everything checked out. */
#define _POSIX_C_SOURCE 200809L
#include <framecache.h>
#include "check.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F(T, field) \
  printf("%s %s %zu %zu\n", #T, #field, offsetof(T, field), sizeof(((T *)0)->field))

static int layout(void) {
  F(fc_cuframes_header, magic); F(fc_cuframes_header, proto_version);
  F(fc_cuframes_header, header_size); F(fc_cuframes_header, file_size);
  F(fc_cuframes_header, buffer_count); F(fc_cuframes_header, max_subscribers);
  F(fc_cuframes_header, slot_desc_size); F(fc_cuframes_header, sub_slot_size);
  F(fc_cuframes_header, slots_offset); F(fc_cuframes_header, subs_offset);
  F(fc_cuframes_header, format); F(fc_cuframes_header, width); F(fc_cuframes_header, height);
  F(fc_cuframes_header, plane_count); F(fc_cuframes_header, pitches);
  F(fc_cuframes_header, plane_offsets); F(fc_cuframes_header, buffer_size);
  F(fc_cuframes_header, backend); F(fc_cuframes_header, publisher_pid);
  F(fc_cuframes_header, device_uuid); F(fc_cuframes_header, epoch); F(fc_cuframes_header, policy);
  F(fc_cuframes_header, reserved0); F(fc_cuframes_header, key);
  F(fc_cuframes_header, time_base_num); F(fc_cuframes_header, time_base_den);
  F(fc_cuframes_header, rate_num); F(fc_cuframes_header, rate_den); F(fc_cuframes_header, reserved1);
  F(fc_cuframes_header, state); F(fc_cuframes_header, notify); F(fc_cuframes_header, latest);
  F(fc_cuframes_header, published); F(fc_cuframes_header, skipped);
  F(fc_cuframes_header, revoked); F(fc_cuframes_header, reserved2);
  F(fc_cuframes_slot_desc, seq); F(fc_cuframes_slot_desc, holders);
  F(fc_cuframes_slot_desc, readers); F(fc_cuframes_slot_desc, reserved0);
  F(fc_cuframes_slot_desc, meta); F(fc_cuframes_slot_desc, reserved1);
  F(fc_cuframes_frame_meta, seq); F(fc_cuframes_frame_meta, pts);
  F(fc_cuframes_frame_meta, duration); F(fc_cuframes_frame_meta, publish_ns);
  F(fc_cuframes_frame_meta, flags); F(fc_cuframes_frame_meta, buffer);
  F(fc_cuframes_frame_meta, width); F(fc_cuframes_frame_meta, height);
  F(fc_cuframes_frame_meta, format); F(fc_cuframes_frame_meta, reserved);
  F(fc_cuframes_sub_slot, state); F(fc_cuframes_sub_slot, pid);
  F(fc_cuframes_sub_slot, attached_ns); F(fc_cuframes_sub_slot, frames);
  F(fc_cuframes_sub_slot, missed); F(fc_cuframes_sub_slot, revoked);
  F(fc_cuframes_sub_slot, torn); F(fc_cuframes_sub_slot, last_seq);
  F(fc_cuframes_sub_slot, reserved);
  printf("sizeof fc_cuframes_header %zu\n", sizeof(fc_cuframes_header));
  printf("sizeof fc_cuframes_slot_desc %zu\n", sizeof(fc_cuframes_slot_desc));
  printf("sizeof fc_cuframes_frame_meta %zu\n", sizeof(fc_cuframes_frame_meta));
  printf("sizeof fc_cuframes_sub_slot %zu\n", sizeof(fc_cuframes_sub_slot));
  return 0;
}

static uint8_t pattern(uint64_t seq, uint32_t plane) {
  return (uint8_t)((seq * 7u + plane * 61u) % 251u);
}

/* NV12: the luma plane has `height` rows, the chroma plane half as many (rounded up). */
static uint32_t rows(uint32_t height, uint32_t plane) { return plane ? (height + 1) / 2 : height; }

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static fc_cuframes_publisher_config pub_config(uint32_t backend) {
  fc_cuframes_publisher_config c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.format = FC_FOURCC_NV12;
  c.width = 320;
  c.height = 240;
  c.buffers = 4;
  c.backend = backend;
  c.time_base_num = 1;
  c.time_base_den = 30000;
  c.rate_num = 30;
  c.rate_den = 1;
  return c;
}

static int nocuda(void) {
  CHECK(fc_cuframes_cuda_available() == 0);
  fc_cuframes_publisher_config c = pub_config(FC_CUFRAMES_BACKEND_CUDA);
  fc_cuframes_publisher *p = (fc_cuframes_publisher *)1;
  EXPECT(fc_cuframes_publisher_create("nocuda", &c, &p), FC_ERR_NO_CUDA);
  CHECK(p == NULL);
  c.backend = 0; /* 0 = CUDA too */
  EXPECT(fc_cuframes_publisher_create("nocuda", &c, &p), FC_ERR_NO_CUDA);
  fc_cuframes_subscriber *s = (fc_cuframes_subscriber *)1;
  EXPECT(fc_cuframes_subscriber_open("nocuda", NULL, &s), FC_ERR_NO_CUDA);
  CHECK(s == NULL);
  CHECK(strstr(fc_strerror(FC_ERR_NO_CUDA), "CUDA") != NULL);
  printf("NO_CUDA ok\n");
  return 0;
}

static int publisher(const char *key, int frames) {
  fc_cuframes_publisher_config c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  fc_cuframes_publisher *p = NULL;
  /* Wrong use first. */
  EXPECT(fc_cuframes_publisher_create(NULL, &c, &p), FC_ERR_INVALID_ARG);
  EXPECT(fc_cuframes_publisher_create(key, NULL, &p), FC_ERR_INVALID_ARG);
  EXPECT(fc_cuframes_publisher_create(key, &c, NULL), FC_ERR_INVALID_ARG);
  EXPECT(fc_cuframes_publisher_create("bad/key", &c, &p), FC_ERR_BAD_SLOT_ID);
  c.struct_size = 8;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  c.format = 0x12345678;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_UNSUPPORTED_FORMAT);
  c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  c.policy = 9;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  c.buffers = 65;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  c.backend = 7;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_OK);
  fc_cuframes_publisher *second = NULL;
  EXPECT(fc_cuframes_publisher_create(key, &c, &second), FC_ERR_BUSY);
  EXPECT(fc_cuframes_publisher_publish(p, NULL, 0, 0, 0, NULL), FC_ERR_STATE);
  fc_cuframes_buffer b;
  memset(&b, 0, sizeof b);
  EXPECT(fc_cuframes_publisher_acquire(p, NULL, &b), FC_ERR_INVALID_ARG); /* struct_size 0 */
  EXPECT(fc_cuframes_publisher_acquire(NULL, NULL, &b), FC_ERR_INVALID_ARG);
  fc_cuframes_publisher_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  printf("READY\n");
  fflush(stdout);
  /* Wait (up to 10 s) for the subscriber the test starts. */
  for (int i = 0; i < 1000; i++) {
    EXPECT(fc_cuframes_publisher_get_stats(p, &st), FC_OK);
    if (st.subscribers > 0) break;
    sleep_ms(10);
  }
  CHECK(st.subscribers == 1);
  for (int n = 0; n < frames; n++) {
    b.struct_size = sizeof b;
    EXPECT(fc_cuframes_publisher_acquire(p, NULL, &b), FC_OK);
    fc_cuframes_buffer again;
    again.struct_size = sizeof again;
    EXPECT(fc_cuframes_publisher_acquire(p, NULL, &again), FC_ERR_STATE);
    CHECK(b.plane_count == 2 && b.width == 320 && b.height == 240 && b.format == FC_FOURCC_NV12);
    CHECK(b.pitches[0] % FC_CUFRAMES_PITCH_ALIGN == 0 && b.pitches[0] >= 320);
    CHECK(b.size % FC_CUFRAMES_BUFFER_ALIGN == 0);
    uint64_t seq = (uint64_t)n + 1;
    /* Host backend: the "device pointer" is a host address in this process. */
    for (uint32_t pl = 0; pl < b.plane_count; pl++)
      memset((void *)(uintptr_t)b.planes[pl], pattern(seq, pl), (size_t)b.pitches[pl] * rows(b.height, pl));
    uint64_t got = 0;
    EXPECT(fc_cuframes_publisher_publish(p, NULL, (int64_t)seq * 1000, 1000, 0, &got), FC_OK);
    CHECK(got == seq);
    sleep_ms(5);
  }
  sleep_ms(300);
  EXPECT(fc_cuframes_publisher_get_stats(p, &st), FC_OK);
  printf("PUBLISHED %llu SKIPPED %llu\n", (unsigned long long)st.published,
         (unsigned long long)st.skipped);
  CHECK(st.published == (uint64_t)frames);
  fc_cuframes_publisher_destroy(p);
  fc_cuframes_publisher_destroy(NULL);
  return 0;
}

static int subscriber(const char *key, int frames, int fps) {
  fc_cuframes_subscriber_config c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.backend = FC_CUFRAMES_BACKEND_HOST;
  fc_cuframes_subscriber *s = NULL;
  EXPECT(fc_cuframes_subscriber_open("no-such-key", &c, &s), FC_ERR_NOT_FOUND);
  EXPECT(fc_cuframes_subscriber_open(key, &c, NULL), FC_ERR_INVALID_ARG);
  c.struct_size = 2; /* short of the struct_size field itself */
  EXPECT(fc_cuframes_subscriber_open(key, &c, &s), FC_ERR_INVALID_ARG);
  c.struct_size = sizeof c;
  /* The publisher may still be starting. */
  int rc = FC_ERR_NOT_FOUND;
  for (int i = 0; i < 500 && rc == FC_ERR_NOT_FOUND; i++) {
    rc = fc_cuframes_subscriber_open(key, &c, &s);
    if (rc == FC_ERR_NOT_FOUND) sleep_ms(10);
  }
  EXPECT(rc, FC_OK);
  fc_cuframes_info info;
  memset(&info, 0, sizeof info);
  EXPECT(fc_cuframes_subscriber_get_info(s, 1000, &info), FC_ERR_INVALID_ARG); /* struct_size */
  info.struct_size = sizeof info;
  EXPECT(fc_cuframes_subscriber_get_info(s, 1000, &info), FC_OK);
  CHECK(info.format == FC_FOURCC_NV12 && info.width == 320 && info.height == 240);
  CHECK(info.plane_count == 2 && info.pitches[0] >= 320 && info.buffers == 4);
  CHECK(info.backend == FC_CUFRAMES_BACKEND_HOST && info.policy == FC_CUFRAMES_POLICY_REVOKE);
  /* The CLI publisher states its --fps as a time base of one frame, in millihertz. */
  CHECK(info.time_base_num == 1000 && info.time_base_den == (uint32_t)fps * 1000);
  CHECK(info.rate_num == (uint32_t)fps * 1000 && info.rate_den == 1000);
  CHECK(info.publisher_pid > 0 && info.epoch != 0);
  fc_cuframes_frame f;
  memset(&f, 0, sizeof f);
  EXPECT(fc_cuframes_subscriber_acquire(s, NULL, 100, &f), FC_ERR_INVALID_ARG); /* struct_size */
  uint64_t checked = 0, last = 0;
  for (int n = 0; n < frames; n++) {
    f.struct_size = sizeof f;
    EXPECT(fc_cuframes_subscriber_acquire(s, NULL, 5000, &f), FC_OK);
    CHECK(f.seq > last);
    last = f.seq;
    CHECK(f.width == 320 && f.height == 240 && f.format == FC_FOURCC_NV12 && f.plane_count == 2);
    CHECK(f.pts == (int64_t)f.seq * 1000 || f.pts == (int64_t)f.seq);
    for (uint32_t pl = 0; pl < f.plane_count; pl++) {
      const uint8_t *d = (const uint8_t *)(uintptr_t)f.planes[pl];
      for (uint32_t y = 0; y < rows(f.height, pl); y++)
        for (uint32_t x = 0; x < f.width; x++)
          if (d[(size_t)y * f.pitches[pl] + x] != pattern(f.seq, pl)) {
            fprintf(stderr, "frame %llu plane %u row %u byte %u: %u\n", (unsigned long long)f.seq,
                    pl, y, x, d[(size_t)y * f.pitches[pl] + x]);
            return 1;
          }
    }
    EXPECT(fc_cuframes_subscriber_release(s, &f, NULL), FC_OK);
    EXPECT(fc_cuframes_subscriber_release(s, &f, NULL), FC_ERR_INVALID_ARG); /* twice */
    checked++;
  }
  fc_cuframes_subscriber_stats st;
  st.struct_size = sizeof st;
  EXPECT(fc_cuframes_subscriber_get_stats(s, &st), FC_OK);
  CHECK(st.frames == checked && st.attached == 1 && st.attaches == 1 && st.torn == 0);
  printf("CHECKED %llu MISSED %llu\n", (unsigned long long)checked, (unsigned long long)st.missed);
  fc_cuframes_subscriber_close(s);
  fc_cuframes_subscriber_close(NULL);
  return 0;
}

#ifdef FC_CUFRAMES_PROTO_MAX /* after 0.1 (the ABI test also compiles this against 0.1) */
/* Packet i of stream 0: (i % 9 + 1) KiB of (i * 13 % 251), a keyframe every 10. */
static size_t pk_size(int i) { return (size_t)(i % 9 + 1) * 1024; }
static uint8_t pk_byte(int i) { return (uint8_t)(i * 13 % 251); }

static int packets(const char *key) {
  static uint8_t data[16384], got[16384];
  fc_stream_info streams[2];
  memset(streams, 0, sizeof streams);
  streams[0].struct_size = sizeof streams[0];
  streams[0].codec = FC_CODEC_H264;
  streams[0].timebase_num = 1;
  streams[0].timebase_den = 90000;
  streams[0].width = 320;
  streams[0].height = 240;
  streams[1].struct_size = sizeof streams[1];
  streams[1].codec = FC_CODEC_AAC;
  streams[1].sample_rate = 48000;
  streams[1].channels = 2;
  fc_cuframes_publisher_config c = pub_config(FC_CUFRAMES_BACKEND_HOST);
  fc_cuframes_publisher *p = NULL;
  fc_packet pk;
  memset(&pk, 0, sizeof pk);
  pk.struct_size = sizeof pk;
  pk.data = data;
  pk.size = 100;
  /* Wrong use: too many streams, none given, a key too long for the packet slot's id. */
  c.packet_stream_count = 9;
  c.packet_streams = streams;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c.packet_stream_count = 1;
  c.packet_streams = NULL;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_ERR_INVALID_ARG);
  c.packet_streams = streams;
  EXPECT(fc_cuframes_publisher_create("k123456789k123456789k123456789k123456789k1234567", &c, &p),
         FC_ERR_INVALID_ARG);
  CHECK(strstr(fc_last_error(), "47") != NULL);
  /* Frames only: every packet call says there is no packet ring. */
  c.packet_stream_count = 0;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_OK);
  EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, NULL), FC_ERR_NO_PACKET_RING);
  EXPECT(fc_cuframes_publisher_set_codec_params(p, 0, data, 4, NULL), FC_ERR_NO_PACKET_RING);
  fc_cuframes_subscriber_config sc;
  memset(&sc, 0, sizeof sc);
  sc.struct_size = sizeof sc;
  sc.backend = FC_CUFRAMES_BACKEND_HOST;
  fc_cuframes_subscriber *s = NULL;
  EXPECT(fc_cuframes_subscriber_open(key, &sc, &s), FC_OK);
  EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &pk, 10), FC_ERR_NO_PACKET_RING);
  fc_cuframes_subscriber_close(s);
  fc_cuframes_publisher_destroy(p);

  /* Two streams, a 1 MiB ring. */
  c.packet_stream_count = 2;
  c.packet_payload_size = 1 << 20;
  EXPECT(fc_cuframes_publisher_create(key, &c, &p), FC_OK);
  EXPECT(fc_cuframes_publisher_publish_packet(p, NULL, NULL), FC_ERR_INVALID_ARG);
  pk.data = NULL;
  EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, NULL), FC_ERR_INVALID_ARG);
  pk.data = data;
  pk.stream = 5;
  EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, NULL), FC_ERR_INVALID_ARG);
  pk.stream = 0;
  EXPECT(fc_cuframes_publisher_set_codec_params(p, 0, NULL, 4, NULL), FC_ERR_INVALID_ARG);
  EXPECT(fc_cuframes_subscriber_open(key, &sc, &s), FC_OK);
  fc_cuframes_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(fc_cuframes_subscriber_get_info(s, 1000, &info), FC_OK);
  CHECK(info.proto_version == 2 && info.packet_stream_count == 2);
  /* A caller built against 0.1 passes the old, shorter struct: it still works. */
  memset(&info, 0xAB, sizeof info);
  info.struct_size = (uint32_t)offsetof(fc_cuframes_info, proto_version);
  EXPECT(fc_cuframes_subscriber_get_info(s, 1000, &info), FC_OK);
  CHECK(info.width == 320 && info.proto_version == 0xABABABABu);
  fc_stream_info si;
  memset(&si, 0, sizeof si);
  si.struct_size = sizeof si;
  EXPECT(fc_cuframes_subscriber_get_packet_stream(s, 0, 1000, &si), FC_OK);
  CHECK(si.codec == FC_CODEC_H264 && si.width == 320 && si.height == 240);
  EXPECT(fc_cuframes_subscriber_get_packet_stream(s, 1, 1000, &si), FC_OK);
  CHECK(si.codec == FC_CODEC_AAC && si.sample_rate == 48000 && si.channels == 2);
  EXPECT(fc_cuframes_subscriber_get_packet_stream(s, 2, 1000, &si), FC_ERR_INVALID_ARG);

  /* Codec parameters: none yet, then a generation, a short buffer, the bytes. */
  size_t size = 0;
  uint32_t gen = 0;
  EXPECT(fc_cuframes_subscriber_get_codec_params(s, 0, 0, got, sizeof got, &size, &gen),
         FC_ERR_NO_CODEC_PARAMS);
  const uint8_t sps[] = {0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68, 0xce};
  EXPECT(fc_cuframes_publisher_set_codec_params(p, 0, sps, sizeof sps, &gen), FC_OK);
  CHECK(gen == 1);
  EXPECT(fc_cuframes_subscriber_get_codec_params(s, 0, 0, got, 4, &size, &gen), FC_ERR_BUFFER_TOO_SMALL);
  CHECK(size == sizeof sps);
  EXPECT(fc_cuframes_subscriber_get_codec_params(s, 0, 0, got, sizeof got, NULL, &gen), FC_ERR_INVALID_ARG);
  EXPECT(fc_cuframes_subscriber_get_codec_params(s, 0, 0, got, sizeof got, &size, &gen), FC_OK);
  CHECK(size == sizeof sps && gen == 1 && !memcmp(got, sps, sizeof sps));

  /* 50 packets of stream 0 with an AAC frame after each; every one read back intact. */
  for (int i = 0; i < 50; i++) {
    memset(data, pk_byte(i), pk_size(i));
    pk.stream = 0;
    pk.pts = pk.dts = (int64_t)i * 3000;
    pk.flags = i % 10 == 0 ? FC_PACKET_KEYFRAME : 0;
    pk.size = pk_size(i);
    uint64_t seq = 0;
    EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, &seq), FC_OK);
    CHECK(seq == (uint64_t)i * 2);
    pk.stream = 1;
    pk.flags = FC_PACKET_KEYFRAME;
    pk.size = 200;
    EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, &seq), FC_OK);
  }
  fc_packet out;
  memset(&out, 0, sizeof out);
  EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 100), FC_ERR_INVALID_ARG);
  out.struct_size = sizeof out;
  EXPECT(fc_cuframes_subscriber_next_packet(s, NULL, sizeof got, &out, 100), FC_ERR_INVALID_ARG);
  for (int i = 0; i < 50; i++) {
    /* A buffer too small leaves the packet for the retry. */
    EXPECT(fc_cuframes_subscriber_next_packet(s, got, 16, &out, 1000), FC_ERR_BUFFER_TOO_SMALL);
    EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 1000), FC_OK);
    CHECK(out.stream == 0 && out.pts == (int64_t)i * 3000 && out.size == pk_size(i));
    CHECK(out.data == got && (out.flags & FC_PACKET_KEYFRAME) == (i % 10 == 0 ? FC_PACKET_KEYFRAME : 0u));
    CHECK(out.params_gen == 1);
    for (size_t k = 0; k < out.size; k++) CHECK(got[k] == pk_byte(i));
    EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 1000), FC_OK);
    CHECK(out.stream == 1 && out.size == 200);
  }
  EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 50), FC_ERR_TIMEOUT);
  /* Larger than a quarter of the ring: refused, nothing published. */
  static uint8_t big[(1 << 18) + 1];
  pk.data = big;
  pk.size = sizeof big;
  EXPECT(fc_cuframes_publisher_publish_packet(p, &pk, NULL), FC_ERR_OVERSIZED);
  EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 50), FC_ERR_TIMEOUT);
  fc_cuframes_subscriber_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  EXPECT(fc_cuframes_subscriber_get_stats(s, &st), FC_OK);
  CHECK(st.packets == 100 && st.packet_overruns == 0);
  /* The publisher goes: the subscriber says so. */
  fc_cuframes_publisher_destroy(p);
  EXPECT(fc_cuframes_subscriber_next_packet(s, got, sizeof got, &out, 300), FC_ERR_WRITER_GONE);
  fc_cuframes_subscriber_close(s);
  printf("PACKETS %llu\n", (unsigned long long)st.packets);
  return 0;
}
#endif

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "layout")) return layout();
  if (argc >= 2 && !strcmp(argv[1], "nocuda")) return nocuda();
  if (argc >= 4 && !strcmp(argv[1], "pub")) return publisher(argv[2], atoi(argv[3]));
  if (argc >= 5 && !strcmp(argv[1], "sub")) return subscriber(argv[2], atoi(argv[3]), atoi(argv[4]));
#ifdef FC_CUFRAMES_PROTO_MAX
  if (argc >= 3 && !strcmp(argv[1], "packets")) return packets(argv[2]);
#endif
  fprintf(stderr, "usage: cuframes layout|nocuda|pub KEY N|sub KEY N FPS|packets KEY\n");
  return 2;
}
