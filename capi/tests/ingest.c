/* The ingest engine from C: wrong use gets error codes; then an RTMP listener on a free
 * port takes a push (made by the test harness with ffmpeg) into a slot, seen through the
 * callback and the counters.
 *   ingest [log]     prints "LISTEN ip:port", waits for a push to key "ckey" to end, and
 *                    prints the counters; exit 0 when everything checked out. With "log", a
 *                    log callback counts the library's messages (and requires the one that
 *                    says the publish ended); without, the library must stay silent. */
#define _POSIX_C_SOURCE 200809L
#include <framecache.h>
#include "check.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int connected, media, disconnected, width, logs, ended;

#ifdef FC_LOG_INFO /* not in the 0.1 header, which the ABI test also compiles this against */
static void on_log(void *user, int level, const char *target, const char *message) {
  (void)user;
  atomic_fetch_add(&logs, 1);
  if (level == FC_LOG_INFO && strstr(target, "framecache_ingest") != NULL &&
      strstr(message, "publish ended") != NULL)
    atomic_fetch_add(&ended, 1);
}
#endif

#ifdef FC_INGEST_PACKET /* after 0.1 */
static atomic_int stream_packets, stream_wrong;

static void on_stream_event(void *user, const fc_ingest_event *ev) {
  (void)user;
  if (ev->struct_size < sizeof(fc_ingest_event)) return;
  if (strcmp(ev->slot, "cslot") != 0) atomic_fetch_add(&stream_wrong, 1);
  if (ev->kind == FC_INGEST_PACKET) {
    if (ev->size == 0 || ev->stream > 1) atomic_fetch_add(&stream_wrong, 1);
    atomic_fetch_add(&stream_packets, 1);
  }
}
#endif

static void on_event(void *user, const fc_ingest_event *ev) {
  (void)user;
  if (ev->struct_size < sizeof(fc_ingest_event)) return;
  if (ev->kind == FC_INGEST_CONNECTED) atomic_fetch_add(&connected, 1);
  if (ev->kind == FC_INGEST_DISCONNECTED) atomic_fetch_add(&disconnected, 1);
  if (ev->kind == FC_INGEST_MEDIA_INFO) {
    atomic_fetch_add(&media, 1);
    atomic_store(&width, (int)ev->width);
  }
}

int main(int argc, char **argv) {
  int with_log = argc > 1 && strcmp(argv[1], "log") == 0;
  fc_ingest *e = NULL;
  char bound[64];
  fc_ingest_stats st;
  const char *bad_urls[] = {"gopher://x/y"};
  const char *escape[] = {"file://vod/../../etc/passwd"};
  struct timespec pause = {0, 50 * 1000 * 1000};
  int i;

#ifdef FC_LOG_INFO
  if (with_log) {
    EXPECT(fc_set_log_callback(FC_LOG_INFO, on_log, NULL), FC_OK);
  } else {
    /* NULL is silence (the state before any call): allowed any time. */
    EXPECT(fc_set_log_callback(FC_LOG_TRACE, NULL, NULL), FC_OK);
  }
#else
  CHECK(!with_log);
#endif
  EXPECT(fc_ingest_create(NULL), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_listen(NULL, "rtmp://127.0.0.1:0", NULL, 0), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_create(&e), FC_OK);
  EXPECT(fc_ingest_listen(e, "gopher://127.0.0.1:0", bound, sizeof bound), FC_ERR_BAD_URL);
  EXPECT(fc_ingest_listen(e, "rtmp://127.0.0.1:1/live/k", bound, sizeof bound), FC_ERR_BAD_URL);
  /* RTMPS needs an identity first; unreadable PEM files are refused when given. */
  EXPECT(fc_ingest_listen(e, "rtmps://127.0.0.1:0", bound, sizeof bound), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_tls(e, "/nonexistent/cert.pem", "/nonexistent/key.pem"), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_tls(e, NULL, "/nonexistent/key.pem"), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_tls(NULL, "/a", "/b"), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_rtmp_read_interval(NULL, 20), FC_ERR_INVALID_ARG);
#ifdef FC_LOG_INFO /* after 0.1 */
  EXPECT(fc_ingest_set_play_access(NULL, 1, "tok", 0, 0), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_play_access(e, 1, "", 0, 0), FC_ERR_INVALID_ARG); /* NULL = no token */
  EXPECT(fc_ingest_set_play_access(e, 1, NULL, 4, 16), FC_OK);
  EXPECT(fc_ingest_set_play_token(NULL, "slot", "tok"), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_play_token(e, "bad/slot", "tok"), FC_ERR_BAD_SLOT_ID);
  EXPECT(fc_ingest_set_play_token(e, "slot", ""), FC_ERR_INVALID_ARG); /* NULL removes */
  EXPECT(fc_ingest_set_play_token(e, "slot", "tok"), FC_OK);
  EXPECT(fc_ingest_set_play_token(e, "slot", NULL), FC_OK);
  {
    const char *hosts[] = {"cdn.example", "*.edge.example", "10.0.0.9:8080"};
    const char *empty[] = {""};
    EXPECT(fc_ingest_set_hls_hosts(NULL, hosts, 3), FC_ERR_INVALID_ARG);
    EXPECT(fc_ingest_set_hls_hosts(e, NULL, 2), FC_ERR_INVALID_ARG);
    EXPECT(fc_ingest_set_hls_hosts(e, empty, 1), FC_ERR_INVALID_ARG);
    EXPECT(fc_ingest_set_hls_hosts(e, hosts, 3), FC_OK);
    EXPECT(fc_ingest_set_hls_hosts(e, NULL, 0), FC_OK);
  }
  {
    fc_probe_result pr;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;
    EXPECT(fc_ingest_probe(NULL, "udp://127.0.0.1:0", 100, &pr), FC_ERR_INVALID_ARG);
    EXPECT(fc_ingest_probe(e, "gopher://x/y", 100, &pr), FC_ERR_BAD_URL);
    EXPECT(fc_ingest_probe(e, "rtmp://127.0.0.1:1935", 100, &pr), FC_ERR_BAD_URL); /* a listener */
    EXPECT(fc_ingest_probe(e, "udp://127.0.0.1:0", 100, NULL), FC_ERR_INVALID_ARG);
    /* Nothing sends to this port: a timeout, with the struct left as it was. */
    EXPECT(fc_ingest_probe(e, "udp://127.0.0.1:0", 300, &pr), FC_ERR_TIMEOUT);
    CHECK(pr.stream_count == 0);
    pr.struct_size = 4;
    EXPECT(fc_ingest_probe(e, "udp://127.0.0.1:0", 100, &pr), FC_ERR_INVALID_ARG);
  }
#endif
  EXPECT(fc_ingest_add(e, "s", bad_urls, 1), FC_ERR_BAD_URL);
  EXPECT(fc_ingest_add(e, "s", escape, 1), FC_ERR_BAD_URL);
  EXPECT(fc_ingest_add(e, "s", NULL, 1), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_add(e, "bad slot", bad_urls, 1), FC_ERR_BAD_SLOT_ID);
  EXPECT(fc_ingest_register_key(e, "k", "s", "short"), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_unregister_key(e, "nokey"), FC_ERR_NOT_FOUND);
  EXPECT(fc_ingest_remove(e, "noslot"), FC_ERR_NOT_FOUND);
  memset(&st, 0, sizeof st);
  st.struct_size = 8;
  EXPECT(fc_ingest_get_stats(e, "ckey", &st), FC_ERR_INVALID_ARG);
  st.struct_size = sizeof st;
  EXPECT(fc_ingest_get_stats(e, "ckey", &st), FC_ERR_NOT_FOUND);

  EXPECT(fc_ingest_set_callback(e, on_event, NULL), FC_OK);
#ifdef FC_INGEST_PACKET
  EXPECT(fc_ingest_observe(NULL, 0), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_observe(e, 1u << 20), FC_ERR_INVALID_ARG);
  EXPECT(fc_ingest_set_stream_callback(e, "bad slot", on_stream_event, NULL), FC_ERR_BAD_SLOT_ID);
  EXPECT(fc_ingest_set_stream_callback(e, "cslot", on_stream_event, NULL), FC_OK);
  EXPECT(fc_ingest_observe(e, 1u << FC_INGEST_CONNECTED | 1u << FC_INGEST_DISCONNECTED |
                                  1u << FC_INGEST_MEDIA_INFO | 1u << FC_INGEST_PACKET),
         FC_OK);
#endif
  EXPECT(fc_ingest_register_key(e, "ckey", "cslot", NULL), FC_OK);
  /* Publishers read every 50 ms instead of 20: the push below must arrive just the same. */
  EXPECT(fc_ingest_set_rtmp_read_interval(e, 50), FC_OK);
  EXPECT(fc_ingest_listen(e, "rtmp://127.0.0.1:0", bound, sizeof bound), FC_OK);
  printf("LISTEN %s\n", bound);
  fflush(stdout);

  /* Wait (up to 60 s) for a push that delivered packets and ended. */
  for (i = 0; i < 1200; i++) {
    if (fc_ingest_get_stats(e, "ckey", &st) == FC_OK && st.packets > 0 && !st.connected &&
        atomic_load(&disconnected) > 0)
      break;
    nanosleep(&pause, NULL);
  }
  /* The publish-ended message is logged as the publisher is dropped, just after the event. */
  for (i = 0; with_log && i < 100 && atomic_load(&ended) == 0; i++) nanosleep(&pause, NULL);
  printf("PACKETS %llu BYTES %llu CONNECTED %d MEDIA %d DISCONNECTED %d WIDTH %d LOGS %d ENDED %d\n",
         (unsigned long long)st.packets, (unsigned long long)st.bytes, atomic_load(&connected),
         atomic_load(&media), atomic_load(&disconnected), atomic_load(&width),
         atomic_load(&logs), atomic_load(&ended));
  fc_ingest_destroy(e);
  fc_ingest_destroy(NULL);
#ifdef FC_LOG_INFO
  /* Uninstalled before exit, so no engine thread can call it afterwards. */
  EXPECT(fc_set_log_callback(0, NULL, NULL), FC_OK);
#endif
#ifdef FC_INGEST_PACKET
  /* Every packet of the push reached the stream's own callback, each naming its slot. */
  if ((unsigned long long)atomic_load(&stream_packets) != (unsigned long long)st.packets ||
      atomic_load(&stream_wrong) != 0) {
    printf("stream callback: %d packets of %llu, %d wrong\n", atomic_load(&stream_packets),
           (unsigned long long)st.packets, atomic_load(&stream_wrong));
    return 1;
  }
#endif
  return st.packets > 0 && atomic_load(&connected) == 1 && atomic_load(&media) == 1 &&
                 atomic_load(&disconnected) == 1 && (!with_log || atomic_load(&ended) >= 1)
             ? 0
             : 1;
}
