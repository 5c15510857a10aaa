/* A C writer: creates a slot, publishes FRAMES frames of the test pattern (in place with
 * acquire/commit, and one through fc_producer_write), and checks the state rules.
 * usage: writer SLOT FRAMES */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framecache.h"
#include "pattern.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: writer SLOT FRAMES\n");
        return 2;
    }
    const char *slot = argv[1];
    long frames = atol(argv[2]);
    fc_slot_config sc;
    memset(&sc, 0, sizeof sc);
    sc.struct_size = sizeof sc;
    sc.fourcc = FC_FOURCC_NV12;
    sc.width = 320;
    sc.height = 180;
    sc.fps_num = 25;
    sc.fps_den = 1;
    sc.depth = 8;
    sc.row_align = 64;
    sc.flags = FC_SLOT_KEEP_ON_CLOSE;
    sc.source_type = "c-writer";
    sc.labels = "lang=c\nuse=test";
    fc_producer *p = NULL;
    EXPECT(fc_producer_create(slot, &sc, &p) == FC_OK && p != NULL);
    fc_producer *again = NULL;
    EXPECT(fc_producer_create(slot, &sc, &again) == FC_ERR_BUSY && again == NULL);

    fc_slot_status info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(fc_slot_info(slot, &info) == FC_OK);
    EXPECT(info.fourcc == FC_FOURCC_NV12 && info.width == 320 && info.writer_alive == 1);
    EXPECT(strcmp(info.source_type, "c-writer") == 0);
    fc_slot_status list[8];
    memset(list, 0, sizeof list);
    list[0].struct_size = sizeof list[0];
    size_t n = 0;
    EXPECT(fc_slot_list(list, 8, &n) == FC_OK && n >= 1);

    /* Geometry of a frame, to lay out the pattern: NV12 with 64-byte rows. */
    fc_frame g;
    memset(&g, 0, sizeof g);
    g.plane_count = 2;
    g.strides[0] = 320;
    g.strides[1] = 320;
    g.offsets[0] = 0;
    g.offsets[1] = 320 * 180;
    g.size = 320 * 180 + 320 * 90;

    uint64_t seq = 99;
    EXPECT(fc_producer_commit(p, 0, 0, 0, &seq) == FC_ERR_STATE);
    uint8_t small[16] = {0};
    EXPECT(fc_producer_write(p, small, sizeof small, 0, 0, NULL) == FC_ERR_INVALID_ARG);
    for (long i = 0; i < frames - 1; i++) {
        uint8_t *data = NULL;
        size_t size = 0;
        EXPECT(fc_producer_acquire(p, &data, &size) == FC_OK);
        EXPECT(size == g.size && ((uintptr_t)data % 4096) == 0);
        if (i == 0) {
            uint8_t *d2;
            size_t s2;
            EXPECT(fc_producer_acquire(p, &d2, &s2) == FC_ERR_STATE);
        }
        pattern_fill(&g, data, (uint64_t)i);
        EXPECT(fc_producer_commit(p, i * 3600, 0, 0, &seq) == FC_OK && seq == (uint64_t)i);
    }
    uint8_t *last = malloc(g.size);
    pattern_fill(&g, last, (uint64_t)(frames - 1));
    EXPECT(fc_producer_write(p, last, g.size, 0, 0, &seq) == FC_OK && seq == (uint64_t)(frames - 1));
    free(last);
    fc_producer_close(p);
    printf("wrote %ld frames\n", frames);
    return 0;
}
