/* The C reader of benches/bindings.rs: reads slot SLOT until its writer is gone, with the
 * zero-copy path (fc_consumer_read + fc_consumer_check) or the copying one
 * (fc_consumer_read_copy), touches the first and last byte of each frame, and prints one
 * `result` line (see benches/bindings.rs for the keys).
 * usage: read SLOT view|copy */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framecache.h"

static uint64_t ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p) {
    return n ? v[(size_t)(p / 100.0 * (double)(n - 1))] : 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: read SLOT view|copy\n");
        return 2;
    }
    int copy = strcmp(argv[2], "copy") == 0;
    fc_consumer_config cc = {0};
    cc.struct_size = sizeof cc;
    cc.mode = FC_MODE_SEQUENTIAL;
    cc.start = FC_START_NEWEST;
    fc_consumer *c = NULL;
    if (fc_consumer_open(argv[1], &cc, &c) != FC_OK) {
        fprintf(stderr, "open: %s\n", fc_last_error());
        return 1;
    }
    fc_slot_status st = {0};
    st.struct_size = sizeof st;
    if (fc_slot_info(argv[1], &st) != FC_OK) return 1;
    uint8_t *buf = malloc(st.frame_size);
    size_t cap = 1u << 20;
    uint64_t *calls = malloc(cap * sizeof *calls), *lats = malloc(cap * sizeof *lats);
    size_t n = 0, frames = 0;
    uint64_t torn = 0, skipped = 0, first = 0, last = 0, cpu0 = 0;
    volatile uint8_t sink = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        fc_frame f = {0};
        f.struct_size = sizeof f;
        uint64_t t0 = ns(CLOCK_MONOTONIC);
        int rc = copy ? fc_consumer_read_copy(c, buf, st.frame_size, &f, 1000)
                      : fc_consumer_read(c, &f, 1000);
        uint64_t t1 = ns(CLOCK_MONOTONIC);
        if (rc == FC_ERR_WRITER_GONE) break;
        if (rc == FC_ERR_TIMEOUT) continue;
        if (rc == FC_ERR_OVERWRITTEN) { torn++; continue; }
        if (rc != FC_OK) {
            fprintf(stderr, "read: %s\n", fc_strerror(rc));
            return 1;
        }
        const uint8_t *d = copy ? buf : (const uint8_t *)f.data;
        sink ^= d[0] ^ d[f.size - 1];
        if (!copy && fc_consumer_check(c, &f) != FC_OK) { torn++; continue; }
        if (first == 0) { first = t1; cpu0 = ns(CLOCK_PROCESS_CPUTIME_ID); }
        last = t1;
        skipped += f.skipped;
        frames++;
        if (n < cap) {
            calls[n] = t1 - t0;
            lats[n] = t1 > f.publish_ns ? t1 - f.publish_ns : 0;
            n++;
        }
    }
    uint64_t cpu = ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    qsort(calls, n, sizeof *calls, cmp);
    qsort(lats, n, sizeof *lats, cmp);
    printf("result frames=%zu torn=%llu skipped=%llu first_ns=%llu last_ns=%llu cpu_ns=%llu "
           "call_p50=%llu call_p99=%llu lat_p50=%llu lat_p99=%llu\n",
           frames, (unsigned long long)torn, (unsigned long long)skipped, (unsigned long long)first,
           (unsigned long long)last, (unsigned long long)cpu,
           (unsigned long long)pct(calls, n, 50), (unsigned long long)pct(calls, n, 99),
           (unsigned long long)pct(lats, n, 50), (unsigned long long)pct(lats, n, 99));
    fc_consumer_close(c);
    free(buf);
    free(calls);
    free(lats);
    return 0;
}
