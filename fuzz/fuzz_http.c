/*
 * fuzz_http.c - the HTTP/1.1 server session (src/http) fed arbitrary bytes in pieces
 * whose sizes come from the input, with partial output drains, asynchronous replies,
 * timeouts and an end of input.  It must never crash, never consume more than it was
 * given, and never queue more than its bound of output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mt_http_req *held;

static int h_echo(struct mt_http_req *req, void *arg)
{
    (void)arg;
    size_t n;
    const void *b = mt_http_req_body(req, &n);
    char q[16];
    mt_http_query_get(req, "q", q, sizeof(q));
    mt_http_req_header(req, "content-type");
    mt_http_reply(req, 200, "text/plain", b, n);
    return MT_HTTP_DONE;
}

static int h_json(struct mt_http_req *req, void *arg)
{
    (void)arg;
    json_t *j = NULL;
    if (mt_http_req_json(req, &j, NULL) != 0)
        return mt_http_reply_error(req, 400, "bad_json", "send JSON"), MT_HTTP_DONE;
    json_object_set_new(j, "id", json_string(mt_http_req_param(req, "id")));
    mt_http_reply_json(req, 200, j);
    return MT_HTTP_DONE;
}

static int h_async(struct mt_http_req *req, void *arg)
{
    (void)arg;
    held = req;
    return MT_HTTP_ASYNC;
}

/* The bound: backpressure at 64 KiB plus one response (body <= max_body, head < 8 KiB). */
#define OUT_BOUND (64 * 1024 + 4096 + 8192)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mt_http_router *r;
    if (!r) {
        r = mt_http_router_new();
        mt_http_route_add(r, "POST", "/echo", h_echo, NULL, NULL);
        mt_http_route_add(r, "GET", "/echo", h_echo, NULL, NULL);
        mt_http_route_add(r, "PUT", "/items/{id}", h_json, NULL, NULL);
        mt_http_route_add(r, "GET", "/async", h_async, NULL, NULL);
    }
    if (size < 2)
        return 0;
    struct mt_http_limits l;
    mt_http_limits_default(&l);
    l.max_head = 1024;
    l.max_headers = 16;
    l.max_body = 4096;
    l.head_ms = l.body_ms = l.idle_ms = 50;
    struct mt_http_session *s = NULL;
    if (mt_http_session_new(r, &l, "fuzz", NULL, NULL, 0, &s) != 0)
        return 0;
    uint32_t seed = (uint32_t)data[0] * 2654435761u + data[1];
    const char *in = (const char *)data + 2;
    size_t len = size - 2, i = 0;
    int64_t now = 0;
    held = NULL;
    for (int round = 0; round < 100000 && !mt_http_session_want_close(s); round++) {
        seed = seed * 1103515245u + 12345u;
        size_t piece = 1 + (seed >> 8) % 64;
        if (piece > len - i)
            piece = len - i;
        ssize_t n = mt_http_session_feed(s, in + i, piece, now);
        if (n < 0 || (size_t)n > piece)
            abort();
        i += (size_t)n;
        const void *p;
        size_t out;
        mt_http_session_output(s, &p, &out);
        if (out > OUT_BOUND)
            abort();
        /* Drain some or all of it, as a socket would. */
        mt_http_session_output_done(s, (seed & 1) ? out : out / 2);
        if (held && (seed & 6)) {
            struct mt_http_req *req = held;
            held = NULL;
            mt_http_reply(req, 202, NULL, "ok", 2);
        }
        now += (seed >> 20) % 8;
        if (mt_http_session_deadline(s) <= now)
            mt_http_session_timeout(s, now);
        if (i == len && n == 0 && !held) {
            const void *q;
            mt_http_session_output(s, &q, &out);
            if (out == 0)
                break;
        }
    }
    mt_http_session_eof(s);
    mt_http_session_free(s); /* detaches a held request */
    if (held)
        mt_http_reply(held, 200, NULL, NULL, 0);
    held = NULL;
    return 0;
}
