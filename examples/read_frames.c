/* Reads frames from a slot through the C ABI and prints one line per frame.
 *
 *   cc -std=c11 examples/read_frames.c $(pkg-config --cflags --libs framecache) -o read_frames
 *   ./read_frames cam1
 */
#include <stdio.h>
#include <string.h>

#include "framecache.h"

int main(int argc, char **argv) {
    const char *slot = argc > 1 ? argv[1] : "cam1";
    fc_consumer *c = NULL;
    int rc = fc_consumer_open(slot, NULL, &c); /* NULL config: sequential, from the newest */
    if (rc != FC_OK) {
        fprintf(stderr, "%s: %s (%s)\n", slot, fc_strerror(rc), fc_last_error());
        return 1;
    }
    for (int i = 0; i < 100; i++) {
        fc_frame f;
        memset(&f, 0, sizeof f);
        f.struct_size = sizeof f;
        rc = fc_consumer_read(c, &f, 2000);
        if (rc != FC_OK) {
            fprintf(stderr, "read: %s\n", fc_strerror(rc));
            break;
        }
        unsigned first = f.data[0]; /* zero-copy: use the bytes, then check */
        if (fc_consumer_check(c, &f) == FC_OK)
            printf("frame %llu %ux%u first byte %u skipped %llu\n", (unsigned long long)f.seq, f.width,
                   f.height, first, (unsigned long long)f.skipped);
    }
    fc_consumer_close(c);
    return 0;
}
