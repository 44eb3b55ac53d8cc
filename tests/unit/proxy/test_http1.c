/*
 * test_http1.c - the HTTP/1.1 identity-header filter as data: input (fed in
 * every split into two pieces, and byte by byte), expected output or error.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http1.h"

#define INJ "X-Client-Cert-Subject: CN=web\r\n"

struct hcase {
    const char *name, *in, *out;
    int err;
};

static const struct hcase cases[] = {
    {"simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\n" INJ "\r\n",
     0},
    {"strips client-supplied identity headers",
     "GET / HTTP/1.1\r\nx-client-cert-subject: CN=admin\r\nX-Client-Cert-Serial: 01\r\n"
     "X-Forwarded-Client-Cert: By=evil\r\nHost: a\r\n\r\n",
     "GET / HTTP/1.1\r\nHost: a\r\n" INJ "\r\n", 0},
    {"keep-alive: two requests, both get the header",
     "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
     "GET /1 HTTP/1.1\r\n" INJ "\r\nGET /2 HTTP/1.1\r\n" INJ "\r\n", 0},
    {"content-length body is not parsed as a request",
     "POST / HTTP/1.1\r\nContent-Length: 25\r\n\r\nGET /x HTTP/1.1\r\n\r\nabcdGET / "
     "HTTP/1.1\r\n\r\n",
     "POST / HTTP/1.1\r\nContent-Length: 25\r\n" INJ "\r\nGET /x HTTP/1.1\r\n\r\nabcd"
     "GET / HTTP/1.1\r\n" INJ "\r\n",
     0},
    {"chunked body then next request",
     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n"
     "Trailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n",
     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" INJ "\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n"
     "0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n" INJ "\r\n",
     0},
    {"upgrade switches to raw bytes",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n" INJ "\r\nGET / HTTP/1.1\r\n\r\n", 0},
    {"not HTTP",
     "\x16\x03\x01\x02"
     "hello\r\n\r\n",
     NULL, PX_H1_E_BAD},
    {"conflicting content lengths",
     "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", NULL, PX_H1_E_BAD},
    {"length and chunked",
     "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
     "\r\n\r\n",
     NULL, PX_H1_E_BAD},
    {"bad content length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", NULL, PX_H1_E_BAD},
    {"bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL,
     PX_H1_E_BAD},
    {"obsolete folding", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", NULL, PX_H1_E_BAD},
    {"header without colon", "GET / HTTP/1.1\r\nbogus\r\n\r\n", NULL, PX_H1_E_BAD},
};

/* Feed `in` in pieces of `step` bytes (0 = at once) through a small output. */
static int run(const char *in, size_t len, size_t step, char *out, size_t *outlen)
{
    static struct px_h1 h;
    memset(&h, 0, sizeof(h));
    size_t i = 0, o = 0;
    int guard = 0;
    while ((i < len || h.pending) && guard++ < 100000) {
        size_t n = step && len - i > step ? step : len - i, used = 0, made = 0;
        int rc = px_h1_feed(&h, in + i, n, &used, out + o, 7, &made, INJ);
        if (rc)
            return rc;
        i += used;
        o += made;
    }
    *outlen = o;
    return 0;
}

TEST(table)
{
    static char out[65536];
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const struct hcase *c = &cases[k];
        size_t len = strlen(c->in);
        for (size_t step = 0; step <= 3; step++) {
            size_t olen = 0;
            int rc = run(c->in, len, step, out, &olen);
            if (rc != c->err || (c->out && (olen != strlen(c->out) || memcmp(out, c->out, olen))))
                fprintf(stderr, "  case '%s' step %zu: rc=%d out='%.*s'\n", c->name, step, rc,
                        (int)olen, out);
            CHECK_INT_EQ(rc, c->err);
            if (c->out && rc == 0) {
                CHECK_INT_EQ(olen, strlen(c->out));
                CHECK(memcmp(out, c->out, olen) == 0);
            }
        }
    }
}

TEST(head_too_big)
{
    static char big[PX_H1_HEAD_MAX + 100];
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    memset(big + 19, 'a', sizeof(big) - 19);
    static char out[65536];
    size_t olen;
    CHECK_INT_EQ(run(big, sizeof(big), 0, out, &olen), PX_H1_E_TOO_BIG);
}

int main(void)
{
    RUN(table);
    RUN(head_too_big);
    return check_summary();
}
