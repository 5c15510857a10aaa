/* cuframes from C.
 *   cuframes layout          print offset and size of every shared struct field
 *   cuframes nocuda          on a machine without CUDA: every CUDA-backend call is FC_ERR_NO_CUDA
 *   cuframes pub KEY N       host-backend publisher of N frames of 320x240 NV12 (pattern below),
 *                            after checking wrong use; prints "READY" once it serves, then waits
 *                            for a subscriber, publishes, and prints its counters
 *   cuframes sub KEY N       host-backend subscriber: takes N frames and checks every byte
 * Pattern (docs/CUFRAMES.md test source): every byte of plane p of frame seq is
 * (7*seq + 61*p) mod 251. Exit 0 when everything checked out. */
#define _POSIX_C_SOURCE 200809L
#include <framecache.h>
#include "check.h"
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

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "layout")) return layout();
  if (argc >= 2 && !strcmp(argv[1], "nocuda")) return nocuda();
  if (argc >= 4 && !strcmp(argv[1], "pub")) return publisher(argv[2], atoi(argv[3]));
  if (argc >= 5 && !strcmp(argv[1], "sub")) return subscriber(argv[2], atoi(argv[3]), atoi(argv[4]));
  fprintf(stderr, "usage: cuframes layout|nocuda|pub KEY N|sub KEY N FPS\n");
  return 2;
}
