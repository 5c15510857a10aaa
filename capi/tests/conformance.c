/* Prints the offset and size of every field of the shared-memory structs as C sees them.
 * The Rust test compares these lines with the Rust layout and with docs/PROTOCOL.md. */
#include <stddef.h>
#include <stdio.h>

#include "framecache.h"

#define F(T, tag, field) printf("%s %s %zu %zu\n", tag, #field, offsetof(T, field), sizeof(((T *)0)->field))

int main(void) {
    F(fc_frame_ring_header, "header", magic);
    F(fc_frame_ring_header, "header", proto_version);
    F(fc_frame_ring_header, "header", header_size);
    F(fc_frame_ring_header, "header", file_size);
    F(fc_frame_ring_header, "header", epoch_ns);
    F(fc_frame_ring_header, "header", writer_pid);
    F(fc_frame_ring_header, "header", state);
    F(fc_frame_ring_header, "header", flags);
    F(fc_frame_ring_header, "header", reserved0);
    F(fc_frame_ring_header, "header", source_type);
    F(fc_frame_ring_header, "header", fourcc);
    F(fc_frame_ring_header, "header", width);
    F(fc_frame_ring_header, "header", height);
    F(fc_frame_ring_header, "header", fps_num);
    F(fc_frame_ring_header, "header", fps_den);
    F(fc_frame_ring_header, "header", depth);
    F(fc_frame_ring_header, "header", plane_count);
    F(fc_frame_ring_header, "header", row_align);
    F(fc_frame_ring_header, "header", strides);
    F(fc_frame_ring_header, "header", offsets);
    F(fc_frame_ring_header, "header", frame_size);
    F(fc_frame_ring_header, "header", frame_stride);
    F(fc_frame_ring_header, "header", desc_offset);
    F(fc_frame_ring_header, "header", data_offset);
    F(fc_frame_ring_header, "header", reserved1);
    F(fc_frame_ring_header, "header", labels);
    F(fc_frame_ring_header, "header", write_seq);
    F(fc_frame_ring_header, "header", wake);
    F(fc_frame_ring_header, "header", reserved2);
    F(fc_frame_ring_header, "header", last_publish_ns);
    F(fc_frame_ring_header, "header", reserved3);
    printf("sizeof header %zu\n", sizeof(fc_frame_ring_header));
    F(fc_frame_desc, "desc", lock);
    F(fc_frame_desc, "desc", seq);
    F(fc_frame_desc, "desc", pts);
    F(fc_frame_desc, "desc", capture_ns);
    F(fc_frame_desc, "desc", publish_ns);
    F(fc_frame_desc, "desc", size);
    F(fc_frame_desc, "desc", flags);
    F(fc_frame_desc, "desc", reserved);
    printf("sizeof desc %zu\n", sizeof(fc_frame_desc));
    return 0;
}
