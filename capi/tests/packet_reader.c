/* A separate process reading a packet slot written by `framecache testsrc --packets` (or
 * `import`), verifying every synthetic payload with its own copy of the pattern, and checking
 * wrong use of the packet API. usage: packet_reader SLOT PACKETS synthetic|media */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framecache.h"

#define EXPECT(cond)                                                                            \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: expectation failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, fc_last_error());                                                    \
            return 1;                                                                           \
        }                                                                                       \
    } while (0)

/* Synthetic packet seq: bytes 0..8 = seq little-endian, then (i*13 + seq*7) mod 256. */
static int payload_ok(uint64_t seq, const uint8_t *d, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        uint8_t want = i < 8 ? (uint8_t)(seq >> (8 * i)) : (uint8_t)(i * 13u + seq * 7u);
        if (d[i] != want) return 0;
    }
    return 1;
}

static int misuse(void) {
    fc_packet_reader *r = (fc_packet_reader *)(uintptr_t)1;
    EXPECT(fc_packet_reader_open("no-such", NULL, &r) == FC_ERR_NO_PACKET_RING && r == NULL);
    EXPECT(fc_packet_reader_open("../x", NULL, &r) == FC_ERR_BAD_SLOT_ID);
    EXPECT(fc_packet_reader_open(NULL, NULL, &r) == FC_ERR_INVALID_ARG);
    fc_packet_reader_config bad = {0};
    EXPECT(fc_packet_reader_open("x", &bad, &r) == FC_ERR_INVALID_ARG);
    fc_packet p;
    memset(&p, 0, sizeof p);
    EXPECT(fc_packet_next(NULL, &p, 0) == FC_ERR_INVALID_ARG);
    EXPECT(fc_packet_publish(NULL, &p, NULL) == FC_ERR_INVALID_ARG);
    fc_packet_writer *w = NULL;
    fc_packet_slot_config sc;
    memset(&sc, 0, sizeof sc);
    sc.struct_size = sizeof sc;
    EXPECT(fc_packet_writer_create("x", &sc, &w) == FC_ERR_INVALID_ARG && w == NULL); /* 0 streams */
    fc_stream_info st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    st.codec = 99;
    sc.stream_count = 1;
    sc.streams = &st;
    EXPECT(fc_packet_writer_create("x", &sc, &w) == FC_ERR_INVALID_ARG);
    fc_packet_reader_close(NULL);
    fc_packet_writer_close(NULL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: packet_reader SLOT PACKETS synthetic|media\n");
        return 2;
    }
    if (misuse()) return 1;
    const char *slot = argv[1];
    long want = atol(argv[2]);
    int synthetic = strcmp(argv[3], "synthetic") == 0;
    fc_packet_reader_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.struct_size = sizeof cfg;
    cfg.start = FC_PACKET_START_OLDEST_KEYFRAME;
    fc_packet_reader *r = NULL;
    int rc = FC_ERR_NO_PACKET_RING;
    for (int i = 0; i < 2000 && rc == FC_ERR_NO_PACKET_RING; i++) {
        rc = fc_packet_reader_open(slot, &cfg, &r);
        if (rc == FC_ERR_NO_PACKET_RING) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
    }
    EXPECT(rc == FC_OK);
    uint32_t n = 0;
    EXPECT(fc_packet_stream_count(r, &n) == FC_OK && n >= 1);
    for (uint32_t i = 0; i < n; i++) {
        fc_stream_info s;
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
        EXPECT(fc_packet_get_stream(r, i, &s) == FC_OK);
        printf("stream %u codec %u media %u %ux%u %u Hz %u ch gen %u\n", i, s.codec, s.media, s.width, s.height,
               s.sample_rate, s.channels, s.params_gen);
        if (!synthetic && s.params_gen > 0) {
            uint8_t params[4096];
            size_t size = 0;
            uint32_t gen = 0;
            EXPECT(fc_packet_get_codec_params(r, i, 0, params, sizeof params, &size, &gen) == FC_OK);
            EXPECT(size > 0 && gen == s.params_gen);
            if (s.codec == FC_CODEC_H264) EXPECT(params[0] == 0 && params[1] == 0 && (params[4] & 0x1f) == 7);
            size_t small = 0;
            EXPECT(fc_packet_get_codec_params(r, i, 0, params, 1, &small, NULL) == FC_ERR_BUFFER_TOO_SMALL &&
                   small == size);
        }
    }
    uint8_t x;
    size_t sz;
    EXPECT(fc_packet_get_codec_params(r, 9, 0, &x, 1, &sz, NULL) == FC_ERR_INVALID_ARG);
    uint8_t *buf = malloc(8u << 20);
    long got = 0, keyframes = 0;
    uint64_t last = 0;
    while (got < want) {
        fc_packet p;
        memset(&p, 0, sizeof p);
        p.struct_size = sizeof p;
        int copy = got % 2;
        rc = copy ? fc_packet_next_copy(r, buf, 8u << 20, &p, 5000) : fc_packet_next(r, &p, 5000);
        if (rc == FC_ERR_PACKET_OVERRUN) continue;
        if (rc != FC_OK) {
            fprintf(stderr, "after %ld packets: %s (%s)\n", got, fc_strerror(rc), fc_last_error());
            break;
        }
        int ok = synthetic ? payload_ok(p.seq, p.data, p.size) : p.size > 0;
        if (!copy && fc_packet_check(r, &p) != FC_OK) continue;
        if (!ok) {
            fprintf(stderr, "packet %llu: payload differs\n", (unsigned long long)p.seq);
            return 1;
        }
        if (got > 0 && p.seq <= last) {
            fprintf(stderr, "packet %llu after %llu\n", (unsigned long long)p.seq, (unsigned long long)last);
            return 1;
        }
        if (got == 0) EXPECT(p.flags & FC_PACKET_KEYFRAME); /* starts at a keyframe */
        if (p.flags & FC_PACKET_KEYFRAME) keyframes++;
        last = p.seq;
        got++;
    }
    fc_packet_reader_counters st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(fc_packet_reader_stats(r, &st) == FC_OK);
    printf("read %ld packets, last seq %llu, %ld keyframes, skipped %llu\n", got, (unsigned long long)last,
           keyframes, (unsigned long long)st.packets_skipped);
    fc_packet_reader_close(r);
    free(buf);
    return got == want ? 0 : 1;
}
