/* The testsrc pattern, written independently of the Rust code from docs/PROTOCOL.md:
 * byte b of row y of plane p in frame seq = (b + 2*y + 3*seq + 61*p) mod 256. */
#ifndef FC_TEST_PATTERN_H
#define FC_TEST_PATTERN_H

#include <stdint.h>
#include <stdio.h>
#include "framecache.h"

/* Rows of plane p: planes are consecutive, so each ends where the next begins. */
static inline uint32_t plane_rows(const fc_frame *f, uint32_t p) {
    uint64_t end = (p + 1 < f->plane_count) ? f->offsets[p + 1] : f->size;
    return (uint32_t)((end - f->offsets[p]) / f->strides[p]);
}

static inline uint8_t pattern_byte(uint64_t seq, uint32_t p, uint32_t y, uint32_t b) {
    return (uint8_t)((b + 2u * y + 3u * (seq % 256u) + 61u * p) & 0xffu);
}

/* Fills frame memory laid out as described by f (data is writable here). */
static inline void pattern_fill(const fc_frame *f, uint8_t *data, uint64_t seq) {
    for (uint32_t p = 0; p < f->plane_count; p++)
        for (uint32_t y = 0; y < plane_rows(f, p); y++)
            for (uint32_t b = 0; b < f->strides[p]; b++)
                data[f->offsets[p] + (uint64_t)y * f->strides[p] + b] = pattern_byte(seq, p, y, b);
}

/* Number of bytes that differ from the pattern; checks that the planes cover the frame. */
static inline uint64_t pattern_mismatches(const fc_frame *f, uint64_t seq) {
    uint64_t bad = 0, covered = 0;
    for (uint32_t p = 0; p < f->plane_count; p++)
        for (uint32_t y = 0; y < plane_rows(f, p); y++)
            for (uint32_t b = 0; b < f->strides[p]; b++) {
                covered++;
                if (f->data[f->offsets[p] + (uint64_t)y * f->strides[p] + b] != pattern_byte(seq, p, y, b))
                    bad++;
            }
    if (covered != f->size) {
        fprintf(stderr, "planes cover %llu of %llu bytes\n", (unsigned long long)covered,
                (unsigned long long)f->size);
        bad++;
    }
    return bad;
}

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expectation failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, fc_last_error());                                  \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

#endif
