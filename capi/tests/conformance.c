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
    F(fc_packet_ring_header, "pheader", magic);
    F(fc_packet_ring_header, "pheader", proto_version);
    F(fc_packet_ring_header, "pheader", header_size);
    F(fc_packet_ring_header, "pheader", file_size);
    F(fc_packet_ring_header, "pheader", epoch_ns);
    F(fc_packet_ring_header, "pheader", writer_pid);
    F(fc_packet_ring_header, "pheader", state);
    F(fc_packet_ring_header, "pheader", flags);
    F(fc_packet_ring_header, "pheader", stream_count);
    F(fc_packet_ring_header, "pheader", source_type);
    F(fc_packet_ring_header, "pheader", desc_count);
    F(fc_packet_ring_header, "pheader", params_capacity);
    F(fc_packet_ring_header, "pheader", params_history);
    F(fc_packet_ring_header, "pheader", primary_stream);
    F(fc_packet_ring_header, "pheader", payload_size);
    F(fc_packet_ring_header, "pheader", streams_offset);
    F(fc_packet_ring_header, "pheader", params_offset);
    F(fc_packet_ring_header, "pheader", desc_offset);
    F(fc_packet_ring_header, "pheader", payload_offset);
    F(fc_packet_ring_header, "pheader", max_packet);
    F(fc_packet_ring_header, "pheader", reserved1);
    F(fc_packet_ring_header, "pheader", labels);
    F(fc_packet_ring_header, "pheader", write_seq);
    F(fc_packet_ring_header, "pheader", wake);
    F(fc_packet_ring_header, "pheader", reserved2);
    F(fc_packet_ring_header, "pheader", write_reserve);
    F(fc_packet_ring_header, "pheader", last_keyframe);
    F(fc_packet_ring_header, "pheader", last_publish_ns);
    F(fc_packet_ring_header, "pheader", bytes_published);
    F(fc_packet_ring_header, "pheader", reserved3);
    printf("sizeof pheader %zu\n", sizeof(fc_packet_ring_header));
    F(fc_stream_desc, "stream", codec);
    F(fc_stream_desc, "stream", media);
    F(fc_stream_desc, "stream", timebase_num);
    F(fc_stream_desc, "stream", timebase_den);
    F(fc_stream_desc, "stream", width);
    F(fc_stream_desc, "stream", height);
    F(fc_stream_desc, "stream", fps_num);
    F(fc_stream_desc, "stream", fps_den);
    F(fc_stream_desc, "stream", sample_rate);
    F(fc_stream_desc, "stream", channels);
    F(fc_stream_desc, "stream", params_gen);
    F(fc_stream_desc, "stream", reserved0);
    F(fc_stream_desc, "stream", tag);
    F(fc_stream_desc, "stream", reserved);
    printf("sizeof stream %zu\n", sizeof(fc_stream_desc));
    F(fc_packet_desc, "pdesc", lock);
    F(fc_packet_desc, "pdesc", seq);
    F(fc_packet_desc, "pdesc", pts);
    F(fc_packet_desc, "pdesc", dts);
    F(fc_packet_desc, "pdesc", pos);
    F(fc_packet_desc, "pdesc", size);
    F(fc_packet_desc, "pdesc", flags);
    F(fc_packet_desc, "pdesc", stream);
    F(fc_packet_desc, "pdesc", params_gen);
    F(fc_packet_desc, "pdesc", publish_ns);
    printf("sizeof pdesc %zu\n", sizeof(fc_packet_desc));
    return 0;
}
