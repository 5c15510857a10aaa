/* ABI compatibility, compiled against the 0.1 header (capi/abi/framecache-0.1.h) and run
 * against the current library: the struct_size rule with structs of other sizes than this
 * header's, as programs built against older and newer headers pass them.
 *   abi      exit 0 when every check passed; prints "abi ok". */
#define _POSIX_C_SOURCE 200809L
#include <framecache.h>
#include "check.h"
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An input struct followed by bytes a newer header would have. */
typedef struct {
  fc_slot_config cfg;
  uint8_t newer[16];
} newer_slot_config;

static int all_bytes(const uint8_t *p, size_t n, uint8_t v) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

int main(void) {
  fc_producer *p = NULL;
  fc_consumer *c = NULL;
  fc_slot_config cfg;
  newer_slot_config big;
  uint8_t frame[64 * 16 * 2];

  /* Input: an older header's fc_slot_config that ends before `flags` (36 bytes): accepted,
   * the missing fields take their defaults. */
  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = (uint32_t)offsetof(fc_slot_config, flags);
  cfg.fourcc = FC_FOURCC_UYVY;
  cfg.width = 64;
  cfg.height = 16;
  EXPECT(fc_producer_create("abi-old", &cfg, &p), FC_OK);
  CHECK(p != NULL);
  memset(frame, 0x80, sizeof frame);
  EXPECT(fc_producer_write(p, frame, sizeof frame, 1, 0, NULL), FC_OK);
  /* Only the required fields (fourcc, width, height: 16 bytes) are needed. */
  fc_producer *q = NULL;
  cfg.struct_size = 16;
  EXPECT(fc_producer_create("abi-min", &cfg, &q), FC_OK);
  fc_producer_close(q);
  q = NULL;
  cfg.struct_size = 12; /* height missing */
  EXPECT(fc_producer_create("abi-short", &cfg, &q), FC_ERR_INVALID_ARG);
  CHECK(q == NULL && strstr(fc_last_error(), "fc_slot_config") != NULL);

  /* Input: a newer header's, larger struct: accepted when the unknown tail is zero. */
  memset(&big, 0, sizeof big);
  big.cfg.struct_size = (uint32_t)sizeof big;
  big.cfg.fourcc = FC_FOURCC_UYVY;
  big.cfg.width = 64;
  big.cfg.height = 16;
  EXPECT(fc_producer_create("abi-new", &big.cfg, &q), FC_OK);
  fc_producer_close(q);
  q = NULL;
  big.newer[3] = 1; /* a field this library cannot honour */
  EXPECT(fc_producer_create("abi-new", &big.cfg, &q), FC_ERR_INVALID_ARG);
  CHECK(q == NULL && strstr(fc_last_error(), "fc_slot_config") != NULL);
  CHECK(strstr(fc_last_error(), "not zero") != NULL);

  /* Output: written up to the caller's struct_size, never past it. */
  {
    fc_consumer_config cc;
    uint8_t buf[sizeof(fc_consumer_counters) + 32];
    fc_consumer_counters *st = (fc_consumer_counters *)buf;
    memset(&cc, 0, sizeof cc);
    cc.struct_size = 4; /* every field has a default */
    cc.start = FC_START_OLDEST;
    EXPECT(fc_consumer_open("abi-old", &cc, &c), FC_OK);
    memset(buf, 0xAB, sizeof buf);
    st->struct_size = (uint32_t)sizeof(fc_consumer_counters);
    EXPECT(fc_consumer_stats(c, st), FC_OK);
    CHECK(st->struct_size == sizeof(fc_consumer_counters));
    CHECK(st->writer_frames == 1 && st->writer_alive == 1);
    CHECK(all_bytes(buf + sizeof(fc_consumer_counters), 32, 0xAB));
    st->struct_size = 8; /* smaller than the first release: refused, nothing written */
    memset(buf + 4, 0xAB, sizeof buf - 4);
    EXPECT(fc_consumer_stats(c, st), FC_ERR_INVALID_ARG);
    CHECK(all_bytes(buf + 4, sizeof buf - 4, 0xAB));
    fc_consumer_close(c);
    c = NULL;
  }

  /* Output arrays step by the caller's struct_size: fc_slot_status as first released (without
   * the packet fields added later), and one as a newer header would have it (larger). */
  {
    size_t old_size = offsetof(fc_slot_status, stream_count), n = 0, i;
    size_t sizes[2] = {old_size, sizeof(fc_slot_status) + 24};
    int k;
    for (k = 0; k < 2; k++) {
      size_t stride = sizes[k];
      uint8_t *arr = malloc(stride * 4 + 16);
      CHECK(arr != NULL);
      memset(arr, 0xAB, stride * 4 + 16);
      ((fc_slot_status *)arr)->struct_size = (uint32_t)stride;
      EXPECT(fc_slot_list((fc_slot_status *)arr, 4, &n), FC_OK);
      CHECK(n == 1); /* abi-old (the others closed, and their files went with them) */
      for (i = 0; i < n && i < 4; i++) {
        fc_slot_status e;
        memset(&e, 0, sizeof e);
        memcpy(&e, arr + i * stride, old_size);
        CHECK(e.struct_size == stride);
        CHECK(e.kind == FC_KIND_FRAMES && e.width == 64 && e.height == 16);
        /* Bytes of each entry past what this library writes stay the caller's. */
        if (stride > sizeof(fc_slot_status))
          CHECK(all_bytes(arr + i * stride + sizeof(fc_slot_status),
                          stride - sizeof(fc_slot_status), 0xAB));
      }
      CHECK(all_bytes(arr + n * stride, (4 - n) * stride + 16, 0xAB));
      free(arr);
    }
  }
  fc_producer_close(p);
  printf("abi ok\n");
  return 0;
}
