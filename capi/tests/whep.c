/* The WHEP engine from C.
 *   whep ASSETS_DIR OFFER_FILE
 * An ingest engine loops ASSETS_DIR/demo.ts into slot "cam" and registers key "later" (a
 * stream that is known but not live). A WHEP engine (token "s3cret", 2 viewers per stream,
 * one allowed origin, 2 s disconnect timeout) is then driven through fc_whep_handle as a host's own HTTP server would:
 * wrong use gets error codes, WHEP failures get their HTTP statuses, the offer in OFFER_FILE
 * gets answers up to the cap. Then the built-in server starts: it prints "LISTEN ip:port",
 * and for each line on stdin prints "VIEWERS n" (the viewers of "cam"), until EOF.
 * Exit 0 when everything checked out. */
#define _POSIX_C_SOURCE 200809L
#include <framecache.h>
#include "check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static fc_whep *w;

/* One request through fc_whep_handle; returns the HTTP status (or the negative code). */
static int request(const char *method, const char *path, const char *ctype, const char *auth,
                   const char *if_match, const char *origin, const char *body,
                   fc_whep_response **keep) {
  fc_whep_request rq;
  fc_whep_response *resp = NULL;
  int rc, status;
  memset(&rq, 0, sizeof rq);
  rq.struct_size = sizeof rq;
  rq.method = method;
  rq.path = path;
  rq.content_type = ctype;
  rq.authorization = auth;
  rq.if_match = if_match;
  rq.origin = origin;
  rq.body = (const uint8_t *)body;
  rq.body_len = body ? strlen(body) : 0;
  rc = fc_whep_handle(w, &rq, &resp);
  if (rc != FC_OK) return rc;
  if (resp->struct_size < sizeof(fc_whep_response) || resp->body[resp->body_len] != 0) {
    fc_whep_response_free(resp);
    return -1000;
  }
  status = (int)resp->status;
  if (keep)
    *keep = resp;
  else
    fc_whep_response_free(resp);
  return status;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = calloc(1, (size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  const char *auth = "Bearer s3cret";
  const char *sdp = "application/sdp";
  fc_ingest *ing = NULL;
  fc_whep_config cfg;
  fc_whep_stats st;
  fc_whep_request rq;
  fc_whep_response *resp = NULL, *a1 = NULL, *a2 = NULL;
  const char *urls[] = {"file://assets/demo.ts"};
  const char *loc1, *loc2, *etag1, *v;
  struct timespec pause = {0, 100 * 1000 * 1000};
  char bound[64], line[64], *offer;
  size_t removed = 99;
  int i, status = 0;

  if (argc != 3 || !(offer = slurp(argv[2]))) {
    fprintf(stderr, "usage: whep ASSETS_DIR OFFER_FILE\n");
    return 2;
  }
  EXPECT(fc_ingest_create(&ing), FC_OK);
  EXPECT(fc_ingest_add_mount(ing, "assets", argv[1]), FC_OK);
  EXPECT(fc_ingest_add(ing, "cam", urls, 1), FC_OK);
  EXPECT(fc_ingest_register_key(ing, "later", "later", NULL), FC_OK);

  /* Wrong use: error codes, nothing created. */
  memset(&cfg, 0, sizeof cfg);
  cfg.struct_size = 2; /* short of the struct_size field itself */
  EXPECT(fc_whep_create(&cfg, &w), FC_ERR_INVALID_ARG);
  CHECK(w == NULL);
  EXPECT(fc_whep_create(NULL, NULL), FC_ERR_INVALID_ARG);
  cfg.struct_size = sizeof cfg;
  cfg.ice_ip = "not-an-ip";
  EXPECT(fc_whep_create(&cfg, &w), FC_ERR_INVALID_ARG);
  cfg.ice_ip = NULL;
  cfg.max_viewers_per_stream = 2;
  cfg.disconnect_timeout_ms = 2000;
  cfg.token = "s3cret";
  cfg.allowed_origins = "https://ok.example, https://also.example";
  cfg.ingest = ing;
  EXPECT(fc_whep_create(&cfg, &w), FC_OK);
  CHECK(w != NULL);
  EXPECT(fc_whep_listen(w, "nonsense", NULL, 0), FC_ERR_BAD_URL);
  EXPECT(fc_whep_listen(NULL, "127.0.0.1:0", NULL, 0), FC_ERR_INVALID_ARG);
  EXPECT(fc_whep_handle(w, NULL, &resp), FC_ERR_INVALID_ARG);
  memset(&rq, 0, sizeof rq);
  rq.struct_size = sizeof rq;
  rq.method = "POST";
  EXPECT(fc_whep_handle(w, &rq, &resp), FC_ERR_INVALID_ARG); /* no path */
  rq.path = "/whep/cam";
  rq.body_len = 10; /* and body NULL */
  EXPECT(fc_whep_handle(w, &rq, &resp), FC_ERR_INVALID_ARG);
  CHECK(resp == NULL);
  rq.body_len = 0;
  rq.method = "BAD METHOD";
  EXPECT(fc_whep_handle(w, &rq, &resp), FC_ERR_INVALID_ARG);
  rq.method = "POST";
  rq.struct_size = 4;
  EXPECT(fc_whep_handle(w, &rq, &resp), FC_ERR_INVALID_ARG);
  memset(&st, 0, sizeof st);
  st.struct_size = 4;
  EXPECT(fc_whep_get_stats(w, NULL, &st), FC_ERR_INVALID_ARG);
  CHECK(fc_whep_response_header(NULL, "etag") == NULL);
  fc_whep_response_free(NULL);

  /* WHEP failures are responses with their statuses. */
  CHECK(request("OPTIONS", "/whep/cam", NULL, NULL, NULL, NULL, NULL, &resp) == 204);
  v = fc_whep_response_header(resp, "Accept-Post");
  CHECK(v && strcmp(v, "application/sdp") == 0);
  fc_whep_response_free(resp);
  CHECK(request("POST", "/whep/cam", sdp, NULL, NULL, NULL, offer, &resp) == 401);
  CHECK(fc_whep_response_header(resp, "www-authenticate") != NULL);
  fc_whep_response_free(resp);
  CHECK(request("POST", "/whep/cam", sdp, "Bearer wrong", NULL, NULL, offer, NULL) == 401);
#ifdef FC_LOG_INFO /* after 0.1: a stream's own viewer token opens that stream only */
  EXPECT(fc_whep_set_stream_token(NULL, "cam", "camtok"), FC_ERR_INVALID_ARG);
  EXPECT(fc_whep_set_stream_token(w, "cam", ""), FC_ERR_INVALID_ARG); /* NULL removes */
  EXPECT(fc_whep_set_stream_token(w, "cam", "camtok"), FC_OK);
  /* Admitted: the request goes on to the Content-Type check. */
  CHECK(request("POST", "/whep/cam", "text/plain", "Bearer camtok", NULL, NULL, offer, NULL) ==
        415);
  CHECK(request("POST", "/whep/nope", sdp, "Bearer camtok", NULL, NULL, offer, NULL) == 401);
  EXPECT(fc_whep_set_stream_token(w, "cam", NULL), FC_OK);
  CHECK(request("POST", "/whep/cam", "text/plain", "Bearer camtok", NULL, NULL, offer, NULL) ==
        401);
#endif
#ifdef FC_LOG_INFO /* after 0.1: WHIP publishers into the ingest engine's keys */
  {
    char *pub = strdup(offer), *d;
    const char *ploc;
    while ((d = strstr(pub, "a=recvonly")) != NULL) memcpy(d, "a=sendonly", 10);
    CHECK(request("POST", "/whip/pub1", sdp, NULL, NULL, NULL, pub, NULL) == 404); /* off */
    EXPECT(fc_whep_set_ingest(NULL, ing), FC_ERR_INVALID_ARG);
    EXPECT(fc_ingest_register_key(ing, "pub1", "pub1", "pubpass-1234"), FC_OK);
    EXPECT(fc_whep_set_ingest(w, ing), FC_OK);
    CHECK(request("POST", "/whip/nokey", sdp, NULL, NULL, NULL, pub, NULL) == 404);
    CHECK(request("POST", "/whip/pub1", sdp, NULL, NULL, NULL, pub, NULL) == 401);
    CHECK(request("POST", "/whip/pub1", sdp, "Bearer pubpass-1234", NULL, NULL, pub, &resp) ==
          201);
    ploc = fc_whep_response_header(resp, "location");
    CHECK(ploc && strncmp(ploc, "/whip/pub1/", 11) == 0);
    CHECK(request("POST", "/whip/pub1", sdp, "Bearer pubpass-1234", NULL, NULL, pub, NULL) ==
          409);
    st.struct_size = sizeof st;
    EXPECT(fc_whep_get_stats(w, NULL, &st), FC_OK);
    CHECK(st.publishers == 1);
    CHECK(request("DELETE", ploc, NULL, NULL, NULL, NULL, NULL, NULL) == 200);
    fc_whep_response_free(resp);
    EXPECT(fc_whep_set_ingest(w, NULL), FC_OK);
    CHECK(request("POST", "/whip/pub1", sdp, "Bearer pubpass-1234", NULL, NULL, pub, NULL) ==
          404);
    free(pub);
  }
#endif
  CHECK(request("POST", "/whep/cam", "text/plain", auth, NULL, NULL, offer, NULL) == 415);
  CHECK(request("POST", "/whep/nope", sdp, auth, NULL, NULL, offer, NULL) == 404);
  CHECK(request("POST", "/whep/later", sdp, auth, NULL, NULL, offer, &resp) == 409);
  CHECK(fc_whep_response_header(resp, "retry-after") != NULL);
  fc_whep_response_free(resp);
  CHECK(request("POST", "/whep/cam", sdp, auth, NULL, NULL, "v=0\r\ngarbage", NULL) == 400);
  CHECK(request("POST", "/whep/cam", sdp, auth, NULL, "https://evil.example", offer, NULL) ==
        403);
  CHECK(request("GET", "/whep/cam", NULL, auth, NULL, NULL, NULL, NULL) == 405);
  CHECK(request("GET", "/elsewhere", NULL, auth, NULL, NULL, NULL, NULL) == 404);

  /* Offers: answered until the cap, refused beyond it. The file input needs a moment. */
  for (i = 0; i < 100; i++) {
    status = request("POST", "/whep/cam", sdp, auth, NULL, "https://ok.example", offer, &a1);
    if (status == 201) break;
    if (a1) fc_whep_response_free(a1);
    a1 = NULL;
    nanosleep(&pause, NULL);
  }
  CHECK(status == 201);
  CHECK(strncmp((const char *)a1->body, "v=0", 3) == 0);
  CHECK(strstr((const char *)a1->body, "H264") != NULL);
  v = fc_whep_response_header(a1, "content-type");
  CHECK(v && strcmp(v, "application/sdp") == 0);
  v = fc_whep_response_header(a1, "access-control-allow-origin");
  CHECK(v && strcmp(v, "https://ok.example") == 0);
  loc1 = fc_whep_response_header(a1, "location");
  etag1 = fc_whep_response_header(a1, "etag");
  CHECK(loc1 && strncmp(loc1, "/whep/cam/", 10) == 0 && etag1);
  CHECK(request("POST", "/whep/cam", sdp, auth, NULL, NULL, offer, &a2) == 201);
  loc2 = fc_whep_response_header(a2, "location");
  CHECK(loc2 && strcmp(loc1, loc2) != 0);
  CHECK(request("POST", "/whep/cam", sdp, auth, NULL, NULL, offer, &resp) == 503);
  CHECK(fc_whep_response_header(resp, "retry-after") != NULL);
  fc_whep_response_free(resp);

  st.struct_size = sizeof st;
  EXPECT(fc_whep_get_stats(w, "cam", &st), FC_OK);
  CHECK(st.viewers == 2 && st.offers == 2 && st.feeds == 1);
  EXPECT(fc_whep_get_stats(w, "nope", &st), FC_OK);
  CHECK(st.viewers == 0);

  /* Trickle with a stale ETag is refused; deletes free the places and are idempotent. */
  CHECK(request("PATCH", loc1, "application/trickle-ice-sdpfrag", auth, "\"stale\"", NULL,
                "a=ice-ufrag:Fx1q\r\na=ice-pwd:p4Zkq0w8u2Ym5Ly1dNh7Qa3c\r\nm=audio 9 "
                "UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=end-of-candidates\r\n",
                NULL) == 412);
  CHECK(request("DELETE", loc1, NULL, auth, NULL, NULL, NULL, NULL) == 200);
  CHECK(request("DELETE", loc1, NULL, auth, NULL, NULL, NULL, NULL) == 204);
  fc_whep_response_free(a1);
  EXPECT(fc_whep_close_stream(w, "cam", &removed), FC_OK);
  CHECK(removed == 1);
  fc_whep_response_free(a2);
  EXPECT(fc_whep_get_stats(w, NULL, &st), FC_OK);
  CHECK(st.viewers == 0);

  /* The built-in server, for real WebRTC viewers driven by the test. */
  EXPECT(fc_whep_listen(w, "127.0.0.1:0", bound, sizeof bound), FC_OK);
  printf("LISTEN %s\n", bound);
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    EXPECT(fc_whep_get_stats(w, "cam", &st), FC_OK);
    printf("VIEWERS %llu\n", (unsigned long long)st.viewers);
    fflush(stdout);
  }
  fc_whep_destroy(w);
  fc_whep_destroy(NULL);
  fc_ingest_destroy(ing);
  free(offer);
  return 0;
}
