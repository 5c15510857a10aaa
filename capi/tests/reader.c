#define _POSIX_C_SOURCE 200809L
/* A separate process reading a slot written by another process, verifying every byte.
 * usage: reader SLOT FRAMES view|copy
 * Also checks that wrong use of the API gives error codes (run under ASan in the tests). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framecache.h"
#include "pattern.h"

static int misuse_checks(void) {
    fc_consumer *c = (fc_consumer *)(uintptr_t)1;
    fc_frame f;
    memset(&f, 0, sizeof f);
    EXPECT(fc_version() != NULL && strlen(fc_version()) > 0);
    for (int code = 1; code >= -40; code--) EXPECT(fc_strerror(code) != NULL);
    EXPECT(strcmp(fc_strerror(FC_ERR_BUSY), "slot is owned by a live writer") == 0);
    EXPECT(fc_consumer_open(NULL, NULL, &c) == FC_ERR_INVALID_ARG && c == NULL);
    EXPECT(fc_consumer_open("x", NULL, NULL) == FC_ERR_INVALID_ARG);
    EXPECT(fc_consumer_open("../../etc/passwd", NULL, &c) == FC_ERR_BAD_SLOT_ID && c == NULL);
    EXPECT(strlen(fc_last_error()) > 0);
    EXPECT(fc_consumer_open("no-such-slot", NULL, &c) == FC_ERR_NOT_FOUND);
    fc_consumer_config bad = {0};
    EXPECT(fc_consumer_open("x", &bad, &c) == FC_ERR_INVALID_ARG); /* struct_size 0 */
    bad.struct_size = sizeof bad;
    bad.mode = 7;
    EXPECT(fc_consumer_open("x", &bad, &c) == FC_ERR_INVALID_ARG);
    EXPECT(fc_consumer_read(NULL, &f, 0) == FC_ERR_INVALID_ARG);
    EXPECT(fc_consumer_check(NULL, &f) == FC_ERR_INVALID_ARG);
    EXPECT(fc_consumer_stats(NULL, NULL) == FC_ERR_INVALID_ARG);
    fc_producer *p = NULL;
    EXPECT(fc_producer_create("x", NULL, &p) == FC_ERR_INVALID_ARG && p == NULL);
    fc_slot_config sc = {0};
    sc.struct_size = sizeof sc;
    sc.fourcc = 0x12345678u;
    sc.width = 64;
    sc.height = 64;
    EXPECT(fc_producer_create("x", &sc, &p) == FC_ERR_UNSUPPORTED_FORMAT);
    EXPECT(fc_producer_write(NULL, NULL, 0, 0, 0, NULL) == FC_ERR_INVALID_ARG);
    EXPECT(fc_producer_commit(NULL, 0, 0, 0, NULL) == FC_ERR_INVALID_ARG);
    size_t n = 99;
    EXPECT(fc_slot_list(NULL, 0, &n) == FC_OK);
    EXPECT(fc_slot_list(NULL, 0, NULL) == FC_ERR_INVALID_ARG);
    fc_consumer_close(NULL);
    fc_producer_close(NULL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: reader SLOT FRAMES view|copy\n");
        return 2;
    }
    if (misuse_checks()) return 1;
    const char *slot = argv[1];
    long want = atol(argv[2]);
    int copy = strcmp(argv[3], "copy") == 0;

    fc_consumer_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.struct_size = sizeof cfg;
    cfg.mode = FC_MODE_SEQUENTIAL;
    cfg.start = FC_START_OLDEST;
    fc_consumer *c = NULL;
    int rc = FC_ERR_NOT_FOUND;
    for (int i = 0; i < 2000 && rc == FC_ERR_NOT_FOUND; i++) {
        rc = fc_consumer_open(slot, &cfg, &c);
        if (rc == FC_ERR_NOT_FOUND) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
    }
    if (rc != FC_OK) {
        fprintf(stderr, "open %s: %s (%s)\n", slot, fc_strerror(rc), fc_last_error());
        return 1;
    }
    uint8_t *buf = NULL;
    long got = 0, torn = 0;
    uint64_t last = 0;
    /* Until the writer's last frame (seq want-1): a reader that falls behind on a loaded
     * machine skips frames (the writer never waits); every frame it reads is verified. */
    while (got == 0 || last + 1 < (uint64_t)want) {
        fc_frame f;
        memset(&f, 0, sizeof f);
        f.struct_size = sizeof f;
        if (copy) {
            if (!buf) buf = malloc(64u << 20);
            rc = fc_consumer_read_copy(c, buf, 64u << 20, &f, 5000);
        } else {
            rc = fc_consumer_read(c, &f, 5000);
        }
        if (rc != FC_OK) {
            fprintf(stderr, "read after %ld frames: %s (%s)\n", got, fc_strerror(rc), fc_last_error());
            break;
        }
        uint64_t bad = pattern_mismatches(&f, f.seq);
        if (!copy && fc_consumer_check(c, &f) != FC_OK) {
            torn++; /* overwritten while we verified it: the API says do not trust it */
            continue;
        }
        if (bad) {
            fprintf(stderr, "frame %llu: %llu bytes differ\n", (unsigned long long)f.seq, (unsigned long long)bad);
            return 1;
        }
        if (got > 0 && f.seq <= last) {
            fprintf(stderr, "frame %llu after %llu\n", (unsigned long long)f.seq, (unsigned long long)last);
            return 1;
        }
        last = f.seq;
        got++;
    }
    fc_consumer_counters st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(fc_consumer_stats(c, &st) == FC_OK);
    printf("read %ld frames, last seq %llu, skipped %llu, torn views %ld, latency avg %llu ns\n", got,
           (unsigned long long)last, (unsigned long long)st.frames_skipped, torn,
           (unsigned long long)st.latency_avg_ns);
    fc_consumer_close(c);
    free(buf);
    return got > 0 && last + 1 == (uint64_t)want ? 0 : 1;
}
