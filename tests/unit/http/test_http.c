/*
 * test_http.c - the HTTP/1.1 server layer (src/http) as data: a table of requests,
 * each fed whole, split at every byte boundary and one byte at a time, with the same
 * responses and the same close decision every time; then routes, async handlers and
 * aborts, timeouts, bounds and the driver helpers.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "http.h"

/* ---- a driver for tests --------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
};

static void out_add(struct out *o, const void *d, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->p = realloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, d, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* Move everything the session queued into `o`. */
static void drain(struct mt_http_session *s, struct out *o)
{
    const void *p;
    size_t n;
    mt_http_session_output(s, &p, &n);
    if (n) {
        out_add(o, p, n);
        mt_http_session_output_done(s, n);
    }
}

/* Feed `n` bytes as a driver would: keep what is not consumed, drain, retry. */
static size_t feed_all(struct mt_http_session *s, const char *d, size_t n, int64_t now,
                       struct out *o)
{
    size_t done = 0;
    for (int round = 0; round < 1000 && done < n; round++) {
        ssize_t r = mt_http_session_feed(s, d + done, n - done, now);
        CHECK(r >= 0);
        if (r < 0)
            break;
        drain(s, o);
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return done;
}

/* ---- handlers ------------------------------------------------------------------- */

static struct mt_http_req *held; /* the request an async handler keeps */
static int aborted;              /* abort callbacks run */
static int wakes;                /* wake callbacks run */

static int h_hello(struct mt_http_req *req, void *arg)
{
    (void)arg;
    mt_http_reply(req, 200, "text/plain", "hello", 5);
    return MT_HTTP_DONE;
}

static int h_echo(struct mt_http_req *req, void *arg)
{
    (void)arg;
    size_t n;
    const void *b = mt_http_req_body(req, &n);
    mt_http_reply(req, 200, "text/plain", b, n);
    return MT_HTTP_DONE;
}

static int h_item(struct mt_http_req *req, void *arg)
{
    (void)arg;
    mt_http_reply_json(req, 200, json_pack("{s:s}", "id", mt_http_req_param(req, "id")));
    return MT_HTTP_DONE;
}

static int h_rotate(struct mt_http_req *req, void *arg)
{
    (void)arg;
    mt_http_reply_json(req, 202,
                       json_pack("{s:s,s:s}", "service", mt_http_req_param(req, "service"),
                                 "method", mt_http_req_method(req)));
    return MT_HTTP_DONE;
}

static int h_query(struct mt_http_req *req, void *arg)
{
    (void)arg;
    char v[32];
    int n = mt_http_query_get(req, "since", v, sizeof(v));
    if (n < 0)
        return mt_http_reply_error(req, 400, "bad_query", "since missing"), MT_HTTP_DONE;
    mt_http_reply(req, 200, "text/plain", v, (size_t)n);
    return MT_HTTP_DONE;
}

static int h_hdr(struct mt_http_req *req, void *arg)
{
    (void)arg;
    const char *v = mt_http_req_header(req, "x-TEST");
    CHECK(mt_http_reply_header(req, "X-Bad", "a\r\nInjected: 1") == MESHTLS_EINVAL);
    CHECK(mt_http_reply_header(req, "Content-Length", "1") == MESHTLS_EINVAL);
    CHECK(mt_http_reply_header(req, "Bad Name", "x") == MESHTLS_EINVAL);
    CHECK(mt_http_reply_header(req, "X-Seen", v ? v : "none") == 0);
    mt_http_reply(req, 200, "text/plain", v ? v : "", v ? strlen(v) : 0);
    return MT_HTTP_DONE;
}

static int h_json(struct mt_http_req *req, void *arg)
{
    (void)arg;
    json_t *j;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (mt_http_req_json(req, &j, &err) != 0)
        return mt_http_reply_error(req, 400, "bad_json", err.msg), MT_HTTP_DONE;
    mt_http_reply_json(req, 200, j);
    return MT_HTTP_DONE;
}

static int h_forget(struct mt_http_req *req, void *arg)
{
    (void)req;
    (void)arg;
    return MT_HTTP_DONE; /* a bug: no reply */
}

static int h_nocontent(struct mt_http_req *req, void *arg)
{
    (void)arg;
    mt_http_reply(req, 204, NULL, NULL, 0);
    return MT_HTTP_DONE;
}

static int h_big(struct mt_http_req *req, void *arg)
{
    (void)arg;
    static char big[100 * 1024];
    memset(big, 'b', sizeof(big));
    mt_http_reply(req, 200, "text/plain", big, sizeof(big));
    return MT_HTTP_DONE;
}

static int h_async(struct mt_http_req *req, void *arg)
{
    (void)arg;
    held = req;
    return MT_HTTP_ASYNC;
}

static void on_abort(struct mt_http_req *req, void *arg)
{
    (void)req;
    aborted++;
    if (arg) /* the abort-and-reply-at-once variant */
        CHECK_INT_EQ(mt_http_reply(req, 200, NULL, NULL, 0), MESHTLS_ENOENT);
    if (arg)
        held = NULL;
}

static int h_async_abortable(struct mt_http_req *req, void *arg)
{
    held = req;
    mt_http_req_set_abort(req, on_abort, arg);
    return MT_HTTP_ASYNC;
}

static void on_wake(void *arg)
{
    (void)arg;
    wakes++;
}

static struct mt_http_router *router(void)
{
    struct mt_http_router *r = mt_http_router_new();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK(r != NULL);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/hello", h_hello, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "POST", "/echo", h_echo, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/items/{id}", h_item, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "POST", "/items/{id}", h_item, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "POST", "/api/admin/security/certificates/{service}/rotate",
                                   h_rotate, NULL, &err),
                 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/query", h_query, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/hdr", h_hdr, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "POST", "/json", h_json, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/forget", h_forget, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "DELETE", "/nocontent", h_nocontent, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/big", h_big, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/async", h_async, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/abortable", h_async_abortable, NULL, &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/abort-reply", h_async_abortable, "x", &err), 0);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/", h_hello, NULL, &err), 0);
    return r;
}

static struct mt_http_limits small_limits(void)
{
    struct mt_http_limits l;
    mt_http_limits_default(&l);
    l.max_head = 256;
    l.max_headers = 8;
    l.max_body = 64;
    return l;
}

/*
 * "200 hello;404;close": each response's status, its body when the status is below 400
 * ("-" when a HEAD response announces a body it does not carry), then "close" if the
 * session wants to close.
 */
static void summarize(const struct out *o, int want_close, char *sum, size_t cap)
{
    size_t pos = 0, sl = 0;
    sum[0] = '\0';
    while (pos < o->len && sl + 80 < cap) {
        const char *r = o->p + pos;
        const char *end = strstr(r, "\r\n\r\n");
        if (strncmp(r, "HTTP/1.1 ", 9) != 0 || !end) {
            sl += (size_t)snprintf(sum + sl, cap - sl, "junk;");
            break;
        }
        int status = atoi(r + 9);
        size_t cl = 0;
        const char *h = strstr(r, "Content-Length: ");
        if (h && h < end)
            cl = (size_t)atol(h + 16);
        pos = (size_t)(end + 4 - o->p);
        sl += (size_t)snprintf(sum + sl, cap - sl, "%d", status);
        if (status == 100) {
            sl += (size_t)snprintf(sum + sl, cap - sl, ";");
            continue;
        }
        int has_body = cl && pos + cl <= o->len && strncmp(o->p + pos, "HTTP/1.1 ", 9) != 0;
        if (cl && !has_body)
            sl += (size_t)snprintf(sum + sl, cap - sl, " -");
        else if (cl && status < 400)
            sl +=
                (size_t)snprintf(sum + sl, cap - sl, " %.*s", (int)(cl > 80 ? 80 : cl), o->p + pos);
        if (has_body)
            pos += cl;
        sl += (size_t)snprintf(sum + sl, cap - sl, ";");
    }
    if (want_close)
        snprintf(sum + sl, cap - sl, "close");
}

/* ---- the table ------------------------------------------------------------------ */

struct hcase {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    const char *want;
    const char *why; /* a word of the session's error message, or NULL */
};

#define H "Host: a\r\n"
#define HUGE_HDR "X-Long: " XS XS XS XS "\r\n"
#define XS "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static const struct hcase cases[] = {
    {"simple GET", "GET /hello HTTP/1.1\r\n" H "\r\n", 0, "200 hello;", NULL},
    {"root", "GET / HTTP/1.1\r\n" H "\r\n", 0, "200 hello;", NULL},
    {"pipelined three, in order",
     "GET /hello HTTP/1.1\r\n" H "\r\nGET /nope HTTP/1.1\r\n" H "\r\nGET /items/7 HTTP/1.1\r\n" H
     "\r\n",
     0, "200 hello;404;200 {\"id\":\"7\"};", NULL},
    {"keep-alive then a partial request", "GET /hello HTTP/1.1\r\n" H "\r\nGET /hel", 0,
     "200 hello;", NULL},
    {"HTTP/1.0 closes", "GET /hello HTTP/1.0\r\n\r\nGET /hello HTTP/1.0\r\n\r\n", 0,
     "200 hello;close", NULL},
    {"HTTP/1.0 keep-alive",
     "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n", 0,
     "200 hello;200 hello;close", NULL},
    {"Connection: close",
     "GET /hello HTTP/1.1\r\n" H "Connection: close\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 0,
     "200 hello;close", NULL},
    {"HEAD has no body", "HEAD /hello HTTP/1.1\r\n" H "\r\nGET /hello HTTP/1.1\r\n" H "\r\n", 0,
     "200 -;200 hello;", NULL},
    {"leading empty line ignored", "\r\nGET /hello HTTP/1.1\r\n" H "\r\n", 0, "200 hello;", NULL},
    {"POST with Content-Length", "POST /echo HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nabcde", 0,
     "200 abcde;", NULL},
    {"POST body is not a request",
     "POST /echo HTTP/1.1\r\n" H "Content-Length: 23\r\n\r\nGET /x HTTP/1.1\r\n\r\nabcd"
     "GET /hello HTTP/1.1\r\n" H "\r\n",
     0, "200 GET /x HTTP/1.1\r\n\r\nabcd;200 hello;", NULL},
    {"chunked body OK",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4;x=y\r\n abc"
     "\r\n0\r\nTrailer: t\r\n\r\nGET /hello HTTP/1.1\r\n" H "\r\n",
     0, "200 hello abc;200 hello;", NULL},
    {"chunked, transfer-coding case-insensitive",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n", 0,
     "200 z;", NULL},
    {"Expect: 100-continue",
     "POST /echo HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok", 0,
     "100;200 ok;", NULL},
    {"absolute-form target", "GET http://a/items/x?y=1 HTTP/1.1\r\n" H "\r\n", 0,
     "200 {\"id\":\"x\"};", NULL},
    {"upgrade header ignored",
     "GET /hello HTTP/1.1\r\n" H "Connection: upgrade\r\nUpgrade: h2c\r\n\r\nGET / HTTP/1.1\r\n" H
     "\r\n",
     0, "200 hello;200 hello;", NULL},
    {"404 keeps the connection", "GET /nope HTTP/1.1\r\n" H "\r\nGET / HTTP/1.1\r\n" H "\r\n", 0,
     "404;200 hello;", NULL},
    {"405 keeps the connection", "PUT /hello HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", 0, "405;",
     NULL},
    {"handler without a reply: 500", "GET /forget HTTP/1.1\r\n" H "\r\n", 0, "500;", NULL},
    {"204 without a length", "DELETE /nocontent HTTP/1.1\r\n" H "\r\nGET / HTTP/1.1\r\n" H "\r\n",
     0, "204;200 hello;", NULL},
    /* smuggling and framing */
    {"CL and TE",
     "POST /echo HTTP/1.1\r\n" H "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     0, "400;close", "Content-Length with Transfer-Encoding"},
    {"TE and CL",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
     0, "400;close", "Content-Length with Transfer-Encoding"},
    {"duplicate CL, same value",
     "POST /echo HTTP/1.1\r\n" H "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0,
     "400;close", "more than one Content-Length"},
    {"conflicting CL",
     "POST /echo HTTP/1.1\r\n" H "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 0,
     "400;close", "more than one Content-Length"},
    {"CL list", "POST /echo HTTP/1.1\r\n" H "Content-Length: 3, 3\r\n\r\nabc", 0, "400;close",
     NULL},
    {"CL sign", "POST /echo HTTP/1.1\r\n" H "Content-Length: +3\r\n\r\nabc", 0, "400;close",
     "decimal"},
    {"CL negative", "POST /echo HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n", 0, "400;close", NULL},
    {"CL hex", "POST /echo HTTP/1.1\r\n" H "Content-Length: 0x3\r\n\r\nabc", 0, "400;close", NULL},
    {"CL empty", "POST /echo HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 0, "400;close", "decimal"},
    {"CL overflow", "POST /echo HTTP/1.1\r\n" H "Content-Length: 99999999999999999999\r\n\r\n", 0,
     "400;close", NULL},
    {"TE gzip", "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\nabc", 0, "400;close",
     "other than one 'chunked'"},
    {"TE gzip, chunked",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 0,
     "400;close", "other than one 'chunked'"},
    {"TE chunked twice",
     "POST /echo HTTP/1.1\r\n" H
     "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     0, "400;close", "other than one 'chunked'"},
    {"TE in HTTP/1.0", "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0,
     "400;close", "HTTP/1.0"},
    {"obs-fold", "GET /hello HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", 0, "400;close", "obs-fold"},
    {"obs-fold with tab", "GET /hello HTTP/1.1\r\n" H "X: a\r\n\tb\r\n\r\n", 0, "400;close",
     "obs-fold"},
    {"bare LF after the request line", "GET /hello HTTP/1.1\n" H "\r\n", 0, "400;close", "bare LF"},
    {"bare LF in a header", "GET /hello HTTP/1.1\r\nHost: a\n\r\n", 0, "400;close", "bare LF"},
    {"bare LF ends the head", "GET /hello HTTP/1.1\r\n" H "\n", 0, "400;close", "bare LF"},
    {"bare CR", "GET /hello HTTP/1.1\rHost: a\r\n\r\n", 0, "400;close", "CR"},
    {"NUL in a header", "GET /hello HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", 40, "400;close",
     "control character"},
    {"control character in a header", "GET /hello HTTP/1.1\r\n" H "X: a\001b\r\n\r\n", 0,
     "400;close", NULL},
    {"DEL in a header", "GET /hello HTTP/1.1\r\n" H "X: a\177b\r\n\r\n", 0, "400;close", NULL},
    {"space before the colon", "GET /hello HTTP/1.1\r\nHost : a\r\n\r\n", 0, "400;close",
     "header name"},
    {"no colon", "GET /hello HTTP/1.1\r\n" H "bogus\r\n\r\n", 0, "400;close", NULL},
    {"chunk size bare LF",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 0,
     "400;close", NULL},
    {"chunk data bare LF",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 0,
     "400;close", "bare LF"},
    {"trailer bare LF",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 0,
     "400;close", "bare LF"},
    {"final bare LF", "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", 0,
     "400;close", "bare LF"},
    {"trailer obs-fold",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n", 0,
     "400;close", "obs-fold"},
    {"trailer control character",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n0\r\nX: \001\r\n\r\n", 0,
     "400;close", NULL},
    {"bad chunk size", "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 0,
     "400;close", NULL},
    {"chunk size overflow",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 0,
     "400;close", "chunk size"},
    {"no Host in HTTP/1.1", "GET /hello HTTP/1.1\r\n\r\n", 0, "400;close", NULL},
    {"two Hosts", "GET /hello HTTP/1.1\r\n" H H "\r\n", 0, "400;close", NULL},
    {"Expect other", "GET /hello HTTP/1.1\r\n" H "Expect: magic\r\n\r\n", 0, "417;close", NULL},
    /* request line */
    {"bad method", "FOO /hello HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"lower-case method", "get /hello HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"bad version", "GET /hello HTTP/1.x\r\n" H "\r\n", 0, "400;close", NULL},
    {"HTTP/2.0", "GET /hello HTTP/2.0\r\n" H "\r\n", 0, "505;close", NULL},
    {"HTTP/0.9", "GET /hello\r\n\r\n", 0, "400;close", NULL},
    {"two spaces", "GET  /hello HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"tab in the target", "GET /he\tllo HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"8-bit target", "GET /h\303\251 HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"asterisk", "OPTIONS * HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"CONNECT", "CONNECT a:443 HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"dot segment", "GET /items/../hello HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"encoded slash in a parameter", "GET /items/a%2Fb HTTP/1.1\r\n" H "\r\n", 0, "400;close",
     NULL},
    {"bad escape in a parameter", "GET /items/a%zz HTTP/1.1\r\n" H "\r\n", 0, "400;close", NULL},
    {"TLS bytes", "\x16\x03\x01\x02\x05hello", 0, "400;close", NULL},
    /* bounds (max_head 256, max_headers 8, max_body 64) */
    {"head too large", "GET /hello HTTP/1.1\r\n" H HUGE_HDR "\r\n", 0, "431;close",
     "larger than 256"},
    {"request line too large", "GET /" XS XS XS XS " HTTP/1.1\r\n" H "\r\n", 0, "431;close", NULL},
    {"too many headers",
     "GET /hello HTTP/1.1\r\n" H
     "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nI: 1\r\n\r\n",
     0, "431;close", "header lines"},
    {"eight headers are fine",
     "GET /hello HTTP/1.1\r\n" H "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\n\r\n", 0,
     "200 hello;", NULL},
    {"body too large by CL", "POST /echo HTTP/1.1\r\n" H "Content-Length: 65\r\n\r\n", 0,
     "413;close", NULL},
    {"body at the limit", "POST /echo HTTP/1.1\r\n" H "Content-Length: 64\r\n\r\n" XS, 0,
     "200 " XS ";", NULL},
    {"chunked body too large",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n40\r\n" XS "\r\n1\r\n", 0,
     "413;close", "larger than 64"},
    {"chunk extension too long",
     "POST /echo HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n1;" XS XS XS XS XS "\r\n", 0,
     "431;close", "chunk size line"},
    {"100-continue refused when too large",
     "POST /echo HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 100\r\n\r\n", 0,
     "413;close", NULL},
    {"nothing after an error is read",
     "GET /hello HTTP/1.1\r\nHost : a\r\n\r\nGET /hello HTTP/1.1\r\n" H "\r\n", 0, "400;close",
     NULL},
};

/* Runs one case with the input cut at `cuts` (sorted, in 0..len); 0 cuts = whole. */
static void run_cut(const struct mt_http_router *r, const struct hcase *c, const size_t *cuts,
                    size_t ncuts, char *sum, size_t cap, struct out *o)
{
    struct mt_http_limits l = small_limits();
    struct mt_http_session *s = NULL;
    size_t len = c->len ? c->len : strlen(c->in), from = 0;
    CHECK_INT_EQ(mt_http_session_new(r, &l, "192.0.2.1:5000", NULL, NULL, 0, &s), 0);
    o->len = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        size_t used = feed_all(s, c->in + from, to - from, 0, o);
        if (used != to - from)
            fprintf(stderr, "%s: consumed %zu of %zu\n", c->name, used, to - from);
        CHECK_INT_EQ(used, to - from);
        from = to;
    }
    summarize(o, mt_http_session_want_close(s), sum, cap);
    const char *msg = NULL;
    mt_http_session_error(s, &msg);
    if (c->why && (!msg || !strstr(msg, c->why))) {
        fprintf(stderr, "case '%s': error '%s' does not say '%s'\n", c->name, msg ? msg : "",
                c->why);
        CHECK(0);
    }
    mt_http_session_free(s);
}

TEST(table_whole_split_and_bytewise)
{
    struct mt_http_router *r = router();
    struct out ref = {0}, o = {0};
    char want[512], got[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct hcase *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        run_cut(r, c, NULL, 0, want, sizeof(want), &ref);
        if (strcmp(want, c->want) != 0)
            fprintf(stderr, "case '%s': got '%s'\n%s\n", c->name, want, ref.p ? ref.p : "");
        CHECK_STR_EQ(want, c->want);
        for (size_t cut = 0; cut <= len; cut++) { /* every split into two */
            run_cut(r, c, &cut, 1, got, sizeof(got), &o);
            if (o.len != ref.len || memcmp(o.p, ref.p, o.len) != 0 || strcmp(got, want) != 0) {
                fprintf(stderr, "case '%s' split at %zu: '%s' vs '%s'\n", c->name, cut, got, want);
                CHECK(0);
                break;
            }
        }
        size_t *cuts = malloc(len * sizeof(size_t) + 1); /* one byte at a time */
        for (size_t k = 0; k < len; k++)
            cuts[k] = k;
        run_cut(r, c, cuts, len, got, sizeof(got), &o);
        free(cuts);
        if (o.len != ref.len || memcmp(o.p, ref.p, o.len) != 0) {
            fprintf(stderr, "case '%s' byte by byte: '%s' vs '%s'\n", c->name, got, want);
            CHECK(0);
        }
    }
    free(ref.p);
    free(o.p);
    mt_http_router_free(r);
}

/* ---- exact responses and accessors ----------------------------------------------- */

/* One request through a fresh session with default limits; the output in `o`. */
static struct mt_http_session *one(const struct mt_http_router *r, const char *in, struct out *o)
{
    struct mt_http_session *s = NULL;
    CHECK_INT_EQ(mt_http_session_new(r, NULL, "192.0.2.1:5000", on_wake, NULL, 0, &s), 0);
    o->len = 0;
    CHECK_INT_EQ(feed_all(s, in, strlen(in), 0, o), strlen(in));
    return s;
}

/* The body of the single response in `o`, parsed as JSON. */
static json_t *body_json(const struct out *o)
{
    const char *b = o->p ? strstr(o->p, "\r\n\r\n") : NULL;
    return b ? json_loads(b + 4, 0, NULL) : NULL;
}

TEST(exact_responses)
{
    struct mt_http_router *r = router();
    struct out o = {0};
    struct mt_http_session *s = one(r, "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK_STR_EQ(o.p,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    CHECK_INT_EQ(mt_http_session_want_close(s), 0);
    mt_http_session_free(s);

    s = one(r, "HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK_STR_EQ(o.p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
    mt_http_session_free(s);

    s = one(r, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &o);
    CHECK_STR_EQ(o.p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                      "5\r\nConnection: keep-alive\r\n\r\nhello");
    CHECK_INT_EQ(mt_http_session_want_close(s), 0);
    mt_http_session_free(s);

    s = one(r, "DELETE /nocontent HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK_STR_EQ(o.p, "HTTP/1.1 204 No Content\r\n\r\n");
    mt_http_session_free(s);

    s = one(r, "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK(strncmp(o.p, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n", 56) == 0);
    json_t *j = body_json(&o);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                 "not_found");
    CHECK(json_object_get(json_object_get(j, "error"), "message") != NULL);
    json_decref(j);
    mt_http_session_free(s);

    s = one(r, "DELETE /items/1 HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK(strstr(o.p, "HTTP/1.1 405 Method Not Allowed\r\n") == o.p);
    CHECK(strstr(o.p, "\r\nAllow: GET, HEAD, POST\r\n") != NULL);
    CHECK_INT_EQ(mt_http_session_want_close(s), 0);
    mt_http_session_free(s);

    s = one(r, "GET /hello HTTP/1.1\r\nHost : a\r\n\r\n", &o);
    CHECK(strstr(o.p, "HTTP/1.1 400 Bad Request\r\n") == o.p);
    CHECK(strstr(o.p, "Connection: close\r\n") != NULL);
    const char *msg = NULL;
    CHECK_INT_EQ(mt_http_session_error(s, &msg), 400);
    CHECK(msg && strstr(msg, "header name") != NULL);
    mt_http_session_free(s);
    free(o.p);
    mt_http_router_free(r);
}

TEST(routes_params_query_headers)
{
    struct mt_http_router *r = router();
    struct out o = {0};
    struct mt_http_session *s =
        one(r,
            "POST /api/admin/security/certificates/web%20api/rotate HTTP/1.1\r\nHost: "
            "a\r\nContent-Length: 0\r\n\r\n",
            &o);
    json_t *j = body_json(&o);
    CHECK(strstr(o.p, "HTTP/1.1 202 Accepted\r\n") == o.p);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "service")), "web api");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "method")), "POST");
    json_decref(j);
    mt_http_session_free(s);

    s = one(r, "GET /api/admin/security/certificates//rotate HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK(strstr(o.p, "HTTP/1.1 404 ") == o.p); /* an empty segment is no parameter */
    mt_http_session_free(s);

    s = one(r, "GET /query?x=1&since=2024-01-01%2012%3A00+Z&since=no HTTP/1.1\r\nHost: a\r\n\r\n",
            &o);
    CHECK(strstr(o.p, "\r\n\r\n2024-01-01 12:00 Z") != NULL);
    mt_http_session_free(s);
    s = one(r, "GET /query?sin=1 HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK(strstr(o.p, "HTTP/1.1 400 ") == o.p);
    mt_http_session_free(s);
    s = one(r, "GET /query?since=%zz HTTP/1.1\r\nHost: a\r\n\r\n", &o);
    CHECK(strstr(o.p, "HTTP/1.1 400 ") == o.p);
    mt_http_session_free(s);
    s = one(r, "GET /query?since=" XS " HTTP/1.1\r\nHost: a\r\n\r\n", &o); /* longer than 31 */
    CHECK(strstr(o.p, "HTTP/1.1 400 ") == o.p);
    mt_http_session_free(s);

    s = one(r, "GET /hdr HTTP/1.1\r\nHost: a\r\nx-test:   v 1  \r\n\r\n", &o);
    CHECK(strstr(o.p, "\r\nX-Seen: v 1\r\n") != NULL);
    CHECK(strstr(o.p, "Injected") == NULL);
    mt_http_session_free(s);

    s = one(r, "POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\n\r\n{\"a\":[1,\"b\"]}", &o);
    CHECK(strstr(o.p, "\r\n\r\n{\"a\":[1,\"b\"]}") != NULL);
    mt_http_session_free(s);
    s = one(r, "POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\n{\"a\":1,\"a\":2}  ",
            &o);
    j = body_json(&o);
    CHECK(strstr(o.p, "HTTP/1.1 400 ") == o.p);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                 "bad_json");
    json_decref(j);
    mt_http_session_free(s);

    /* route table errors */
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/hello", h_hello, NULL, &err), MESHTLS_EEXIST);
    CHECK_INT_EQ(mt_http_route_add(r, "get", "/x", h_hello, NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "x", h_hello, NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/a/{}", h_hello, NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_http_route_add(r, "GET", "/a b", h_hello, NULL, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "/a b") != NULL);
    free(o.p);
    mt_http_router_free(r);
}

/* ---- async handlers and aborts -------------------------------------------------- */

TEST(async_reply_keeps_order)
{
    struct mt_http_router *r = router();
    struct out o = {0};
    struct mt_http_session *s = NULL;
    const char *in = "GET /async HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t first = strlen("GET /async HTTP/1.1\r\nHost: a\r\n\r\n");
    held = NULL;
    wakes = 0;
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, on_wake, NULL, 0, &s), 0);
    mt_http_session_set_conn_data(s, &o);
    /* The session takes the first request only and holds the pipelined second back. */
    CHECK_INT_EQ(mt_http_session_feed(s, in, strlen(in), 0), first);
    CHECK(held != NULL);
    CHECK(mt_http_req_conn_data(held) == &o);
    CHECK_STR_EQ(mt_http_req_client_addr(held), "");
    CHECK_INT_EQ(mt_http_session_want_input(s), 0);
    CHECK_INT_EQ(mt_http_session_deadline(s), INT64_MAX);
    CHECK_INT_EQ(mt_http_session_feed(s, in + first, strlen(in) - first, 5), 0);
    drain(s, &o);
    CHECK_INT_EQ(o.len, 0);
    /* Later, on the loop thread: the reply, the wake, then the rest of the input. */
    CHECK_INT_EQ(mt_http_reply(held, 200, "text/plain", "late", 4), 0);
    CHECK_INT_EQ(wakes, 1);
    CHECK_INT_EQ(mt_http_session_want_input(s), 1);
    CHECK_INT_EQ(mt_http_session_feed(s, in + first, strlen(in) - first, 10), strlen(in) - first);
    drain(s, &o);
    CHECK(strstr(o.p, "late") != NULL && strstr(o.p, "hello") > strstr(o.p, "late"));
    CHECK_INT_EQ(wakes, 1); /* a reply inside feed does not wake */
    /* The idle timer counts from the first call after the async reply (t=10). */
    CHECK_INT_EQ(mt_http_session_deadline(s), 10 + 60000);
    mt_http_session_free(s);
    free(o.p);
    mt_http_router_free(r);
}

TEST(async_abort_on_close)
{
    struct mt_http_router *r = router();
    struct mt_http_session *s = NULL;
    const char *in = "GET /abortable HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    /* Abort, then the late reply: it frees the request and says the connection is gone. */
    held = NULL;
    aborted = 0;
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, on_wake, NULL, 0, &s), 0);
    mt_http_session_set_conn_data(s, s);
    CHECK_INT_EQ(mt_http_session_feed(s, in, strlen(in), 0), strlen(in));
    CHECK(held != NULL);
    mt_http_session_free(s);
    CHECK_INT_EQ(aborted, 1);
    CHECK(mt_http_req_conn_data(held) == NULL);         /* the driver's data is gone with it */
    CHECK_STR_EQ(mt_http_req_path(held), "/abortable"); /* the request data is not */
    CHECK_INT_EQ(mt_http_reply_header(held, "X-A", "b"), 0);
    CHECK_INT_EQ(mt_http_reply_error(held, 503, "gone", "gone"), MESHTLS_ENOENT);
    held = NULL;

    /* Abort callback that replies at once. */
    in = "GET /abort-reply HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, on_wake, NULL, 0, &s), 0);
    CHECK_INT_EQ(mt_http_session_feed(s, in, strlen(in), 0), strlen(in));
    mt_http_session_free(s);
    CHECK_INT_EQ(aborted, 2);
    CHECK(held == NULL);

    /* A JSON reply on a detached request still takes the reference. */
    in = "GET /async HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, on_wake, NULL, 0, &s), 0);
    CHECK_INT_EQ(mt_http_session_feed(s, in, strlen(in), 0), strlen(in));
    mt_http_session_free(s);
    CHECK_INT_EQ(mt_http_reply_json(held, 200, json_object()), MESHTLS_ENOENT);

    /* EOF while the handler works: the reply closes the connection. */
    struct out o = {0};
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, on_wake, NULL, 0, &s), 0);
    CHECK_INT_EQ(mt_http_session_feed(s, in, strlen(in), 0), strlen(in));
    mt_http_session_eof(s);
    CHECK_INT_EQ(mt_http_session_want_close(s), 0);
    CHECK_INT_EQ(mt_http_reply(held, 200, NULL, "x", 1), 0);
    drain(s, &o);
    CHECK(strstr(o.p, "Connection: close\r\n") != NULL);
    CHECK_INT_EQ(mt_http_session_want_close(s), 1);
    CHECK_INT_EQ(mt_http_reply(held, 200, NULL, "x", 1), MESHTLS_EINVAL); /* twice */
    mt_http_session_free(s);
    free(o.p);
    mt_http_router_free(r);
}

/* ---- time ----------------------------------------------------------------------- */

TEST(timeouts)
{
    struct mt_http_router *r = router();
    struct mt_http_limits l;
    struct out o = {0};
    struct mt_http_session *s = NULL;
    mt_http_limits_default(&l);
    l.head_ms = 1000;
    l.body_ms = 2000;
    l.idle_ms = 3000;

    /* A connection that sends nothing is closed without a word after head_ms. */
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 100, &s), 0);
    CHECK_INT_EQ(mt_http_session_deadline(s), 1100);
    CHECK_INT_EQ(mt_http_session_timeout(s, 1099), 0);
    CHECK_INT_EQ(mt_http_session_timeout(s, 1100), 1);
    CHECK_INT_EQ(mt_http_session_want_close(s), 1);
    drain(s, &o);
    CHECK_INT_EQ(o.len, 0);
    mt_http_session_free(s);

    /* Slowloris: a head trickling in gets a 408 head_ms after the first request began. */
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &s), 0);
    CHECK_INT_EQ(feed_all(s, "GET /hel", 8, 500, &o), 8);
    CHECK_INT_EQ(feed_all(s, "lo HTTP/1.1\r\n", 13, 900, &o), 13);
    CHECK_INT_EQ(mt_http_session_deadline(s), 1000);
    CHECK_INT_EQ(mt_http_session_timeout(s, 1000), 1);
    drain(s, &o);
    CHECK(strstr(o.p, "HTTP/1.1 408 Request Timeout\r\n") == o.p);
    CHECK_INT_EQ(mt_http_session_want_close(s), 1);
    CHECK_INT_EQ(mt_http_session_deadline(s), INT64_MAX);
    mt_http_session_free(s);

    /* Keep-alive: idle_ms after the response, then a silent close; the next request's
     * head_ms counts from its first byte. */
    o.len = 0;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &s), 0);
    const char *req = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT_EQ(feed_all(s, req, strlen(req), 200, &o), strlen(req));
    CHECK_INT_EQ(mt_http_session_deadline(s), 3200);
    CHECK_INT_EQ(feed_all(s, "GET", 3, 3000, &o), 3);
    CHECK_INT_EQ(mt_http_session_deadline(s), 4000);
    CHECK_INT_EQ(feed_all(s, req + 3, strlen(req) - 3, 3500, &o), strlen(req) - 3);
    CHECK_INT_EQ(mt_http_session_deadline(s), 6500);
    o.len = 0;
    CHECK_INT_EQ(mt_http_session_timeout(s, 6500), 1);
    CHECK_INT_EQ(mt_http_session_want_close(s), 1);
    drain(s, &o);
    CHECK_INT_EQ(o.len, 0);
    mt_http_session_free(s);

    /* A body must arrive within body_ms of the head's end. */
    o.len = 0;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &s), 0);
    req = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc";
    CHECK_INT_EQ(feed_all(s, req, strlen(req), 300, &o), strlen(req));
    CHECK_INT_EQ(mt_http_session_deadline(s), 2300);
    CHECK_INT_EQ(mt_http_session_timeout(s, 2300), 1);
    drain(s, &o);
    CHECK(strstr(o.p, "HTTP/1.1 408 ") == o.p);
    mt_http_session_free(s);
    free(o.p);
    mt_http_router_free(r);
}

/* ---- bounds and independence ---------------------------------------------------- */

TEST(bounded_and_independent)
{
    struct mt_http_router *r = router();
    struct mt_http_limits l = small_limits();
    struct out fast_out = {0}, slow_out = {0};
    struct mt_http_session *slow = NULL, *fast = NULL;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &slow), 0);
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &fast), 0);
    /* A slow client trickles a head while a fast one completes 200 requests. */
    const char *slow_req = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *fast_req = "GET /items/x HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t sl = strlen(slow_req);
    for (int i = 0; i < 200; i++) {
        if ((size_t)i < sl - 1)
            CHECK_INT_EQ(feed_all(slow, slow_req + i, 1, i, &slow_out), 1);
        CHECK_INT_EQ(feed_all(fast, fast_req, strlen(fast_req), i, &fast_out), strlen(fast_req));
    }
    CHECK_INT_EQ(slow_out.len, 0);
    size_t n = 0;
    for (const char *p = fast_out.p; (p = strstr(p, "HTTP/1.1 200 OK")); p++)
        n++;
    CHECK_INT_EQ(n, 200);
    CHECK_INT_EQ(feed_all(slow, slow_req + sl - 1, 1, 300, &slow_out), 1);
    CHECK(strstr(slow_out.p, "hello") != NULL);
    mt_http_session_free(slow);
    mt_http_session_free(fast);

    /* An endless header line is refused at max_head, never buffered beyond it. */
    fast_out.len = 0;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &slow), 0);
    CHECK_INT_EQ(feed_all(slow, "GET / HTTP/1.1\r\nX: ", 19, 0, &fast_out), 19);
    for (int i = 0; i < 1000 && !mt_http_session_want_close(slow); i++)
        feed_all(slow, XS, strlen(XS), 0, &fast_out);
    CHECK(strstr(fast_out.p, "HTTP/1.1 431 ") == fast_out.p);
    mt_http_session_free(slow);

    /* Output backpressure: with 100 KiB unsent, the next pipelined request waits. */
    fast_out.len = 0;
    CHECK_INT_EQ(mt_http_session_new(r, NULL, NULL, NULL, NULL, 0, &fast), 0);
    const char *two = "GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t first = strlen("GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT_EQ(mt_http_session_feed(fast, two, strlen(two), 0), first);
    CHECK_INT_EQ(mt_http_session_want_input(fast), 0);
    const void *p;
    mt_http_session_output(fast, &p, &n);
    CHECK(n > 100 * 1024);
    mt_http_session_output_done(fast, 1000);
    CHECK_INT_EQ(mt_http_session_feed(fast, two + first, strlen(two) - first, 0), 0);
    drain(fast, &fast_out);
    CHECK_INT_EQ(mt_http_session_want_input(fast), 1);
    CHECK_INT_EQ(mt_http_session_feed(fast, two + first, strlen(two) - first, 0),
                 strlen(two) - first);
    mt_http_session_free(fast);

    /* max_requests: the last allowed response says close. */
    fast_out.len = 0;
    l.max_requests = 2;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &fast), 0);
    const char *req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT_EQ(feed_all(fast, req, strlen(req), 0, &fast_out), strlen(req));
    CHECK_INT_EQ(mt_http_session_want_close(fast), 0);
    CHECK_INT_EQ(feed_all(fast, req, strlen(req), 0, &fast_out), strlen(req));
    CHECK_INT_EQ(mt_http_session_want_close(fast), 1);
    CHECK(strstr(fast_out.p, "Connection: close\r\n") != NULL);
    mt_http_session_free(fast);

    /* EOF in the middle of a request: close, no response. */
    fast_out.len = 0;
    CHECK_INT_EQ(mt_http_session_new(r, &l, NULL, NULL, NULL, 0, &fast), 0);
    CHECK_INT_EQ(feed_all(fast, req, 5, 0, &fast_out), 5);
    mt_http_session_eof(fast);
    CHECK_INT_EQ(mt_http_session_want_close(fast), 1);
    CHECK_INT_EQ(fast_out.len, 0);
    mt_http_session_free(fast);
    free(fast_out.p);
    free(slow_out.p);
    mt_http_router_free(r);
}

/* ---- helpers for the driver ----------------------------------------------------- */

TEST(driver_helpers)
{
    CHECK_INT_EQ(mt_http_sniff("\x16\x03\x01", 3), MT_HTTP_SNIFF_TLS);
    CHECK_INT_EQ(mt_http_sniff("GET / HTTP/1.1", 14), MT_HTTP_SNIFF_HTTP);
    CHECK_INT_EQ(mt_http_sniff("POST ", 5), MT_HTTP_SNIFF_HTTP);
    CHECK_INT_EQ(mt_http_sniff("DELETE /x", 9), MT_HTTP_SNIFF_HTTP);
    CHECK_INT_EQ(mt_http_sniff("PO", 2), MT_HTTP_SNIFF_MORE);
    CHECK_INT_EQ(mt_http_sniff("", 0), MT_HTTP_SNIFF_MORE);
    CHECK_INT_EQ(mt_http_sniff("GETX", 4), MT_HTTP_SNIFF_OTHER);
    CHECK_INT_EQ(mt_http_sniff("SSH-2.0", 7), MT_HTTP_SNIFF_OTHER);

    char buf[1024];
    size_t n = mt_http_plaintext_on_tls_reply(403, buf, sizeof(buf));
    CHECK(n > 0);
    buf[n] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n", 56) == 0);
    CHECK(strstr(buf, "\r\nConnection: close\r\n\r\n") != NULL);
    const char *body = strstr(buf, "\r\n\r\n") + 4;
    char cl[64];
    snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", strlen(body));
    CHECK(strstr(buf, cl) != NULL);
    json_t *j = json_loads(body, 0, NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                 "tls_required");
    json_decref(j);
    n = mt_http_plaintext_on_tls_reply(400, buf, sizeof(buf));
    buf[n] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK_INT_EQ(mt_http_plaintext_on_tls_reply(400, buf, 50), 0);
    CHECK_INT_EQ(mt_http_error_response(99, "x", "y", buf, sizeof(buf)), 0);
    /* Messages are JSON strings through jansson: quotes and newlines come out escaped. */
    n = mt_http_error_response(500, "c", "say \"hi\"\n", buf, sizeof(buf) - 1);
    buf[n] = '\0';
    CHECK(strstr(buf, "\"say \\\"hi\\\"\\n\"") != NULL);
    CHECK_STR_EQ(mt_http_status_text(431), "Request Header Fields Too Large");
    CHECK_STR_EQ(mt_http_status_text(299), "Unknown");
}

int main(void)
{
    RUN(table_whole_split_and_bytewise);
    RUN(exact_responses);
    RUN(routes_params_query_headers);
    RUN(async_reply_keeps_order);
    RUN(async_abort_on_close);
    RUN(timeouts);
    RUN(bounded_and_independent);
    RUN(driver_helpers);
    return check_summary();
}
