/*
 * http.c - one HTTP/1.1 server connection as a state machine fed with bytes.
 *
 * The life of a request (one at a time per session, so responses keep request order):
 *
 *   IDLE --first byte--> HEAD --blank line--> [body?] BODY --end--> HANDLER --reply--> IDLE
 *                          \______________ any error: queue 4xx, CLOSING ______________/
 *
 * HEAD: we frame the head ourselves, byte by byte, into a buffer bounded by max_head,
 * refusing what libhttp-parser would let through (measured on Debian's 2.9.4, see
 * docs/HTTP.md): bare LF, bare CR, obs-fold, control characters, a malformed request
 * line.  Only a complete head goes to http_parser, in one call, so every callback points
 * into our buffer and a header arrives in one piece.  on_headers_complete then applies
 * the framing rules that stop request smuggling (one Content-Length, digits only; no
 * Content-Length with Transfer-Encoding; chunked as the only coding; no
 * Transfer-Encoding in HTTP/1.0; one Host).
 *
 * BODY: the same parser instance reads the body straight from the driver's bytes (no
 * copy of framing), on_body copies the data into a buffer bounded by max_body, and the
 * bytes between data (chunk sizes, trailers) pass through a second line checker.  The
 * parser is paused at on_message_complete, so it never reads into the next pipelined
 * request: those bytes stay with the driver until the reply is queued.
 *
 * HANDLER: the request is immutable until the reply; the session consumes nothing.
 * A handler that went asynchronous and outlives the connection finds its request
 * detached, not freed (see http.h): only a reply call frees a detached request.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <jansson.h>

#include "http_int.h"
#include "parse.h"

#define OUT_HIGH (64 * 1024)   /* queued output above which no new request is read */
#define HEAD_INIT 1024         /* first size of the head buffer; it doubles as needed */
#define HEAD_LIMIT (64 * 1024) /* the largest max_head accepted (http_parser allows 80K) */
#define XHDR_MAX 4096          /* extra response headers of one reply */
#define LEADING_EMPTY_MAX 4    /* empty lines ignored before a request line (RFC 9112 2.2) */
#define NO_VALUE UINT32_MAX    /* a header line with an empty value */

enum st {
    ST_IDLE = 0, /* between requests: nothing of the next one read yet */
    ST_HEAD,     /* reading the request line and headers */
    ST_BODY,     /* reading the body */
    ST_HANDLER,  /* the handler holds the request; nothing is read */
    ST_CLOSING,  /* no more requests: flush the output and close */
};

struct http_hdr {
    uint32_t name, name_len; /* offsets into req->head; NUL-terminated at dispatch */
    uint32_t val, val_len;   /* NO_VALUE when the value is empty */
};

struct mt_http_req {
    struct mt_http_session *s;           /* NULL once detached: the connection went away */
    char *head;                          /* the raw head, then decoded path parameters */
    size_t head_len;                     /* bytes of head */
    size_t head_cap;                     /* allocated */
    struct http_hdr *hdrs;               /* max_headers entries */
    unsigned nhdrs;                      /* used */
    unsigned method;                     /* enum http_method */
    size_t url_off, url_len;             /* the request target in head */
    size_t path_off;                     /* NUL-terminated path in head */
    size_t query_off;                    /* NUL-terminated query in head, or SIZE_MAX */
    char *body;                          /* body bytes, bounded by max_body */
    size_t body_len, body_cap;           /* used, allocated */
    unsigned nparams;                    /* path parameters of the matched route */
    const char *pnames[HTTP_MAX_PARAMS]; /* their names (owned by the router) */
    size_t pvals[HTTP_MAX_PARAMS];       /* their decoded values: offsets into head */
    char *xh;                            /* extra response headers, "Name: value\r\n"... */
    size_t xh_len;                       /* used of XHDR_MAX */
    void (*abort_fn)(struct mt_http_req *, void *); /* told when detached */
    void *abort_arg;                                /* borrowed */
    int replied;                                    /* a reply ended this request */
    char client_addr[64];                           /* copied at session creation */
};

struct mt_http_session {
    const struct mt_http_router *router; /* borrowed */
    struct mt_http_limits lim;           /* copied */
    mt_http_wake_fn wake;                /* asynchronous reply queued */
    void *drv;                           /* the driver's argument to wake */
    void *conn_data;                     /* the driver's, borrowed */
    struct mt_http_req *req;             /* the one request object, reused */
    http_parser hp;                      /* re-initialized for each request */
    enum st st;
    int in_call;    /* inside feed/timeout: the driver looks at output itself */
    int want_close; /* close once the output is flushed */
    int keep_alive; /* the current request allows another after it */
    int ka_header;  /* HTTP/1.0 keep-alive: say "Connection: keep-alive" */
    int head_only;  /* HEAD: the response has no body */
    int eof;        /* the peer stopped sending */
    int nomem;      /* an allocation failed: feed returns MESHTLS_ENOMEM */
    /* head framing (scan_head) */
    int prev_cr;          /* the previous byte was CR */
    size_t line_len;      /* bytes of the current line before its CR */
    unsigned line_no;     /* 0: request line */
    unsigned sp;          /* spaces seen in the request line */
    unsigned char prev;   /* the previous byte of the line */
    unsigned empty_lines; /* ignored before the request line */
    /* parser callbacks */
    int last_cb;           /* 1 after a header name piece, 2 after a value piece */
    int headers_done;      /* on_headers_complete ran */
    int msg_done;          /* on_message_complete ran: the request is whole */
    int chunked;           /* the body is chunked */
    int in_trailer;        /* after the last chunk */
    size_t trailer_bytes;  /* bounded by max_head */
    int fprev_cr;          /* framing checker: previous byte CR */
    size_t fline_len;      /* framing checker: current line length */
    const char *scan;      /* framing checker: first unchecked byte of the input */
    int fail_status;       /* set by a callback that refused the request */
    const char *fail_code; /* its machine-readable code */
    char fail_msg[256];    /* its message (also mt_http_session_error()) */
    /* time */
    int64_t created, head_start, body_start, idle_start, last_now;
    int idle_pending; /* an asynchronous reply ended a request at an unknown time */
    unsigned nreq;    /* requests answered */
    struct {
        char *p;
        size_t off, len, cap; /* [off, len) is pending */
    } out;
};

/* ---- small helpers ------------------------------------------------------------ */

void mt_http_limits_default(struct mt_http_limits *l)
{
    l->max_head = 16 * 1024;
    l->max_headers = 100;
    l->max_body = 1024 * 1024;
    l->head_ms = 10000;
    l->body_ms = 30000;
    l->idle_ms = 60000;
    l->max_requests = 1000;
}

const char *mt_http_status_text(int status)
{
    if (status < 100 || status > 599)
        return "Unknown";
    const char *s = http_status_str((enum http_status)status);
    return s[0] == '<' ? "Unknown" : s;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A header value from a handler: visible ASCII, obs-text, SP, HT; no CR/LF/CTL. */
static int value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

static size_t out_pending(const struct mt_http_session *s)
{
    return s->out.len - s->out.off;
}

/* Room for `more` bytes at the end of the output. */
static int out_reserve(struct mt_http_session *s, size_t more)
{
    if (s->out.off == s->out.len)
        s->out.off = s->out.len = 0;
    if (s->out.cap - s->out.len >= more)
        return 0;
    if (s->out.off) { /* compact before growing */
        memmove(s->out.p, s->out.p + s->out.off, s->out.len - s->out.off);
        s->out.len -= s->out.off;
        s->out.off = 0;
        if (s->out.cap - s->out.len >= more)
            return 0;
    }
    size_t cap = s->out.cap ? s->out.cap : 4096;
    while (cap - s->out.len < more) {
        if (cap > SIZE_MAX / 2)
            return MESHTLS_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(s->out.p, cap);
    if (!p)
        return MESHTLS_ENOMEM;
    s->out.p = p;
    s->out.cap = cap;
    return 0;
}

static int out_append(struct mt_http_session *s, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    if (out_reserve(s, len) != 0)
        return MESHTLS_ENOMEM;
    memcpy(s->out.p + s->out.len, data, len);
    s->out.len += len;
    return 0;
}

/* {"error":{"code":..,"message":..}} through jansson; NULL on failure. Free with free(). */
static char *error_json(const char *code, const char *message)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    if (!j) /* not UTF-8: say so rather than send nothing */
        j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
                      "(the error message was not valid UTF-8)");
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/*
 * The status line and headers of a response with a body of `clen` bytes.
 * `conn`: 0 nothing, 1 "Connection: close", 2 "Connection: keep-alive".
 * @return the length written into `buf`, or 0 if it does not fit.
 */
static size_t fmt_head(char *buf, size_t cap, int status, const char *ctype, size_t clen, int conn,
                       const char *xh, size_t xh_len)
{
    int no_body = status == 204 || status == 304;
    int n = snprintf(buf, cap, "HTTP/1.1 %d %s\r\n%s%s%s", status, mt_http_status_text(status),
                     ctype && !no_body ? "Content-Type: " : "", ctype && !no_body ? ctype : "",
                     ctype && !no_body ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    size_t len = (size_t)n;
    if (!no_body) {
        n = snprintf(buf + len, cap - len, "Content-Length: %zu\r\n", clen);
        if (n < 0 || (size_t)n >= cap - len)
            return 0;
        len += (size_t)n;
    }
    const char *c = conn == 1   ? "Connection: close\r\n"
                    : conn == 2 ? "Connection: keep-alive\r\n"
                                : "";
    size_t need = strlen(c) + xh_len + 2;
    if (cap - len <= need)
        return 0;
    memcpy(buf + len, c, strlen(c));
    len += strlen(c);
    if (xh_len)
        memcpy(buf + len, xh, xh_len);
    len += xh_len;
    memcpy(buf + len, "\r\n", 2);
    return len + 2;
}

/* Queues one response.  `conn` as for fmt_head. */
static int respond(struct mt_http_session *s, int status, const char *ctype, const void *body,
                   size_t len, int conn, const char *xh, size_t xh_len)
{
    char head[512 + XHDR_MAX];
    int no_body = status == 204 || status == 304;
    size_t hl = fmt_head(head, sizeof(head), status, ctype, no_body ? 0 : len, conn, xh, xh_len);
    if (hl == 0)
        return MESHTLS_EINVAL;
    if (out_append(s, head, hl) != 0)
        return MESHTLS_ENOMEM;
    if (!no_body && !s->head_only && out_append(s, body, len) != 0)
        return MESHTLS_ENOMEM;
    return 0;
}

/* ---- the request object --------------------------------------------------------- */

static void req_free(struct mt_http_req *req)
{
    if (!req)
        return;
    free(req->head);
    free(req->hdrs);
    free(req->body);
    free(req->xh);
    free(req);
}

/* Forget the last request; give back memory a large one took. */
static void req_reset(struct mt_http_req *req)
{
    if (req->head_cap > 4 * HEAD_INIT) {
        char *p = realloc(req->head, HEAD_INIT);
        if (p) {
            req->head = p;
            req->head_cap = HEAD_INIT;
        }
    }
    if (req->body_cap > 64 * 1024) {
        free(req->body);
        req->body = NULL;
        req->body_cap = 0;
    }
    req->head_len = req->body_len = req->xh_len = 0;
    req->nhdrs = req->nparams = 0;
    req->url_off = req->url_len = 0;
    req->query_off = SIZE_MAX;
    req->abort_fn = NULL;
    req->abort_arg = NULL;
}

/* Per-request parse state of the session. */
static void parse_reset(struct mt_http_session *s)
{
    s->prev_cr = 0;
    s->line_len = 0;
    s->line_no = 0;
    s->sp = 0;
    s->prev = 0;
    s->empty_lines = 0;
    s->last_cb = 0;
    s->headers_done = s->msg_done = 0;
    s->chunked = s->in_trailer = 0;
    s->trailer_bytes = 0;
    s->fprev_cr = 0;
    s->fline_len = 0;
    s->scan = NULL;
    s->fail_status = 0;
    s->fail_code = NULL;
    s->keep_alive = 1;
    s->ka_header = 0;
    s->head_only = 0;
}

/* Record why a request is refused (the response is queued by fail_now). */
__attribute__((format(printf, 4, 5))) static int refuse(struct mt_http_session *s, int status,
                                                        const char *code, const char *fmt, ...)
{
    if (s->fail_status)
        return -1; /* keep the first reason */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
    va_end(ap);
    s->fail_status = status;
    s->fail_code = code;
    return -1;
}

/* Queue the refusal recorded by refuse() and close: the framing can no longer be trusted. */
static void fail_now(struct mt_http_session *s)
{
    char *body = error_json(s->fail_code, s->fail_msg);
    if (!body || respond(s, s->fail_status, "application/json", body, strlen(body), 1, NULL, 0))
        s->nomem = 1;
    free(body);
    s->st = ST_CLOSING;
    s->want_close = 1;
}

/* The reply that ended a request has been queued: on to the next, or close. */
static void request_done(struct mt_http_session *s, int close)
{
    s->nreq++;
    req_reset(s->req);
    parse_reset(s);
    if (close) {
        s->st = ST_CLOSING;
        s->want_close = 1;
        return;
    }
    s->st = ST_IDLE;
    s->idle_start = s->last_now;
    s->idle_pending = !s->in_call; /* an async reply: stamp the time at the next call */
}

/* ---- http_parser callbacks ------------------------------------------------------ */

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct mt_http_session *s = hp->data;
    struct mt_http_req *req = s->req;
    if (s->st != ST_HEAD)
        return 0;
    if (req->url_len == 0)
        req->url_off = (size_t)(at - req->head);
    req->url_len = (size_t)(at + len - (req->head + req->url_off));
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct mt_http_session *s = hp->data;
    struct mt_http_req *req = s->req;
    if (s->st != ST_HEAD)
        return 0; /* a trailer: checked as framing, not kept */
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return refuse(s, 400, "bad_header",
                          "a header name holds a character that is not allowed (a space "
                          "before ':'?): send 'Name: value' lines");
    if (s->last_cb != 1) {
        if (req->nhdrs >= s->lim.max_headers)
            return refuse(s, 431, "too_many_headers",
                          "more than %u header lines: send fewer headers", s->lim.max_headers);
        struct http_hdr *h = &req->hdrs[req->nhdrs++];
        h->name = (uint32_t)(at - req->head);
        h->val = NO_VALUE;
        h->val_len = 0;
    }
    struct http_hdr *h = &req->hdrs[req->nhdrs - 1];
    h->name_len = (uint32_t)(at + len - (req->head + h->name));
    s->last_cb = 1;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct mt_http_session *s = hp->data;
    struct mt_http_req *req = s->req;
    if (s->st != ST_HEAD || req->nhdrs == 0)
        return 0;
    struct http_hdr *h = &req->hdrs[req->nhdrs - 1];
    if (h->val == NO_VALUE)
        h->val = (uint32_t)(at - req->head);
    h->val_len = (uint32_t)(at + len - (req->head + h->val));
    s->last_cb = 2;
    return 0;
}

/* Header `h` is named `name`? */
static int hdr_is(const struct mt_http_req *req, const struct http_hdr *h, const char *name)
{
    return strlen(name) == h->name_len && strncasecmp(req->head + h->name, name, h->name_len) == 0;
}

/* The value of `h` without trailing whitespace, as pointer and length. */
static const char *hdr_val(const struct mt_http_req *req, const struct http_hdr *h, size_t *len)
{
    if (h->val == NO_VALUE) {
        *len = 0;
        return "";
    }
    const char *v = req->head + h->val;
    size_t n = h->val_len;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *len = n;
    return v;
}

/* The framing rules: everything that would let two parsers disagree on where a request ends. */
static int on_headers_complete(http_parser *hp)
{
    struct mt_http_session *s = hp->data;
    struct mt_http_req *req = s->req;
    unsigned cl = 0, te = 0, host = 0;
    int te_chunked = 0, expect_continue = 0;
    uint64_t clen = 0;
    s->headers_done = 1;
    req->method = hp->method;
    s->head_only = hp->method == HTTP_HEAD;
    if (hp->http_major != 1)
        return refuse(s, 505, "http_version", "only HTTP/1.0 and HTTP/1.1 are served");
    s->keep_alive = http_should_keep_alive(hp) != 0;
    s->ka_header = s->keep_alive && hp->http_minor == 0;
    for (unsigned i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        size_t vl;
        const char *v = hdr_val(req, h, &vl);
        if (hdr_is(req, h, "content-length")) {
            char num[24];
            int64_t n;
            if (++cl > 1)
                return refuse(s, 400, "bad_framing",
                              "more than one Content-Length header: send exactly one");
            if (vl == 0 || vl >= sizeof(num) || strspn(v, "0123456789") < vl)
                return refuse(s, 400, "bad_framing",
                              "Content-Length is not a decimal number of bytes");
            memcpy(num, v, vl);
            num[vl] = '\0';
            if (mt_parse_i64(num, 0, INT64_MAX, &n) != 0)
                return refuse(s, 400, "bad_framing", "Content-Length is out of range");
            clen = (uint64_t)n;
        } else if (hdr_is(req, h, "transfer-encoding")) {
            te++;
            te_chunked = vl == 7 && strncasecmp(v, "chunked", 7) == 0;
        } else if (hdr_is(req, h, "host")) {
            host++;
        } else if (hdr_is(req, h, "expect")) {
            if (vl != 12 || strncasecmp(v, "100-continue", 12) != 0)
                return refuse(s, 417, "expectation_failed",
                              "only 'Expect: 100-continue' is understood: drop the header");
            expect_continue = 1;
        }
    }
    if (te && cl)
        return refuse(s, 400, "bad_framing",
                      "both Content-Length and Transfer-Encoding: send exactly one of them");
    if (te && (te > 1 || !te_chunked))
        return refuse(s, 400, "bad_framing",
                      "Transfer-Encoding other than one 'chunked' is not accepted: send the body "
                      "with Content-Length or 'Transfer-Encoding: chunked'");
    if (te && hp->http_minor == 0)
        return refuse(s, 400, "bad_framing",
                      "Transfer-Encoding in an HTTP/1.0 request: send Content-Length");
    if (host > 1 || (host == 0 && hp->http_minor >= 1))
        return refuse(s, 400, "bad_host", "an HTTP/1.1 request needs exactly one Host header");
    /* Our reading and the parser's must agree, or a bug in one becomes a smuggling hole. */
    s->chunked = (hp->flags & F_CHUNKED) != 0;
    if (s->chunked != (te > 0) || (cl && hp->content_length != clen) ||
        (!cl && !te && (hp->flags & F_CONTENTLENGTH)))
        return refuse(s, 400, "bad_framing", "the request's framing is ambiguous");
    if (clen > s->lim.max_body)
        return refuse(s, 413, "body_too_large",
                      "the request body is larger than %zu bytes: send less", s->lim.max_body);
    if (clen > req->body_cap) {
        char *b = realloc(req->body, (size_t)clen);
        if (!b)
            return refuse(s, 503, "out_of_memory", "the server is out of memory: retry later");
        req->body = b;
        req->body_cap = (size_t)clen;
    }
    /* curl waits a second for this before sending a body; the client still may not. */
    if (expect_continue && hp->http_minor >= 1 && (clen || te) &&
        out_append(s, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
        return refuse(s, 503, "out_of_memory", "the server is out of memory: retry later");
    return 0;
}

/* The second line checker, over the chunked framing between data (sizes, trailers). */
static int scan_framing(struct mt_http_session *s, const char *from, const char *to)
{
    for (const char *p = from; p < to; p++) {
        unsigned char c = (unsigned char)*p;
        if (s->in_trailer && ++s->trailer_bytes > s->lim.max_head)
            return refuse(s, 431, "head_too_large",
                          "the chunked trailers are larger than %zu bytes", s->lim.max_head);
        if (s->fprev_cr) {
            s->fprev_cr = 0;
            if (c != '\n')
                return refuse(s, 400, "bad_framing", "a CR in chunked framing without LF");
            s->fline_len = 0;
            continue;
        }
        if (c == '\r') {
            s->fprev_cr = 1;
            continue;
        }
        if (c == '\n')
            return refuse(s, 400, "bad_framing",
                          "chunked framing lines must end with CRLF, not a bare LF");
        if ((c == ' ' || c == '\t') && s->fline_len == 0)
            return refuse(s, 400, "bad_framing", "a folded trailer line (obs-fold)");
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return refuse(s, 400, "bad_framing", "a control character in chunked framing");
        if (++s->fline_len > s->lim.max_head) /* an endless chunk extension */
            return refuse(s, 431, "head_too_large",
                          "a chunk size line or trailer is longer than %zu bytes", s->lim.max_head);
    }
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct mt_http_session *s = hp->data;
    struct mt_http_req *req = s->req;
    if (s->chunked) {
        if (scan_framing(s, s->scan, at) != 0)
            return -1;
        s->scan = at + len;
    }
    if (len > s->lim.max_body - req->body_len)
        return refuse(s, 413, "body_too_large",
                      "the request body is larger than %zu bytes: send less", s->lim.max_body);
    if (req->body_len + len > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + len)
            cap *= 2;
        if (cap > s->lim.max_body)
            cap = s->lim.max_body;
        char *b = realloc(req->body, cap);
        if (!b)
            return refuse(s, 503, "out_of_memory", "the server is out of memory: retry later");
        req->body = b;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    return 0;
}

static int on_chunk_header(http_parser *hp)
{
    struct mt_http_session *s = hp->data;
    if (hp->content_length == 0)
        s->in_trailer = 1;
    else if (hp->content_length > s->lim.max_body - s->req->body_len)
        return refuse(s, 413, "body_too_large",
                      "the request body is larger than %zu bytes: send less", s->lim.max_body);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct mt_http_session *s = hp->data;
    s->msg_done = 1;
    http_parser_pause(hp, 1); /* do not read into the next pipelined request */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- dispatch ------------------------------------------------------------------- */

/* A reply made by the layer itself (404, 405, 500), keeping the connection. */
static void reply_own(struct mt_http_session *s, int status, const char *code, const char *msg,
                      const char *xh)
{
    struct mt_http_req *req = s->req;
    if (xh) {
        size_t n = strlen(xh);
        if (n < XHDR_MAX && (req->xh || (req->xh = malloc(XHDR_MAX)))) {
            memcpy(req->xh, xh, n);
            req->xh_len = n;
        }
    }
    mt_http_reply_error(req, status, code, msg);
}

/* Split the target, NUL-terminate what handlers read, match a route, call its handler. */
static void dispatch(struct mt_http_session *s)
{
    struct mt_http_req *req = s->req;
    char *u = req->head + req->url_off;
    size_t ul = req->url_len;
    if (ul && u[0] != '/') {
        /* absolute-form (RFC 9112 3.2.2): a server must accept it; keep its path. */
        struct http_parser_url pu;
        http_parser_url_init(&pu);
        if ((ul > 7 && strncasecmp(u, "http://", 7) == 0) ||
            (ul > 8 && strncasecmp(u, "https://", 8) == 0)) {
            if (http_parser_parse_url(u, ul, 0, &pu) == 0 && (pu.field_set & (1 << UF_PATH))) {
                u += pu.field_data[UF_PATH].off;
                ul -= pu.field_data[UF_PATH].off;
            }
        }
    }
    if (ul == 0 || u[0] != '/' || memchr(u, '#', ul)) {
        refuse(s, 400, "bad_target", "the request target must be a path such as /healthz");
        fail_now(s);
        return;
    }
    char *q = memchr(u, '?', ul);
    size_t pl = q ? (size_t)(q - u) : ul;
    u[pl] = '\0'; /* the '?' or the space before the version */
    req->path_off = (size_t)(u - req->head);
    if (q) {
        u[ul] = '\0'; /* the space before the version */
        req->query_off = (size_t)(q + 1 - req->head);
    }
    for (const char *seg = u; seg; seg = strchr(seg + 1, '/')) {
        size_t n = strcspn(seg + 1, "/");
        if ((n == 1 && seg[1] == '.') || (n == 2 && seg[1] == '.' && seg[2] == '.')) {
            refuse(s, 400, "bad_target",
                   "'.' and '..' path segments are not accepted: send the normalized path");
            fail_now(s);
            return;
        }
    }
    for (unsigned i = 0; i < req->nhdrs; i++) {
        struct http_hdr *h = &req->hdrs[i];
        size_t vl;
        req->head[h->name + h->name_len] = '\0'; /* the ':' */
        if (h->val != NO_VALUE) {
            hdr_val(req, h, &vl);
            h->val_len = (uint32_t)vl;
            req->head[h->val + vl] = '\0'; /* trailing space or the CR */
        }
    }
    /* Room behind the head for the decoded parameters (never longer than the path). */
    size_t need = req->head_len + pl + HTTP_MAX_PARAMS + 1;
    if (need > req->head_cap) {
        char *p = realloc(req->head, need);
        if (!p) {
            refuse(s, 503, "out_of_memory", "the server is out of memory: retry later");
            fail_now(s);
            return;
        }
        req->head = p;
        req->head_cap = need;
    }
    const char *path = req->head + req->path_off;
    struct http_match m;
    http_router_match(s->router, req->method, path, &m);
    s->st = ST_HANDLER;
    req->replied = 0;
    if (!m.route) {
        char msg[320], allow[256] = "Allow: ";
        if (!m.allow) {
            reply_own(s, 404, "not_found", "no resource at this path: check the URL", NULL);
            return;
        }
        size_t al = strlen(allow);
        for (unsigned b = 0; b < 64; b++) {
            if (!(m.allow & (UINT64_C(1) << b)))
                continue;
            int n = snprintf(allow + al, sizeof(allow) - al, "%s%s", al > 7 ? ", " : "",
                             http_method_str((enum http_method)b));
            if (n > 0 && (size_t)n < sizeof(allow) - al)
                al += (size_t)n;
        }
        snprintf(msg, sizeof(msg), "%s is not allowed here: use %s",
                 http_method_str((enum http_method)req->method), allow + 7);
        if (al + 2 < sizeof(allow))
            memcpy(allow + al, "\r\n", 3);
        reply_own(s, 405, "method_not_allowed", msg, allow);
        return;
    }
    size_t pos = req->head_len;
    for (unsigned i = 0; i < m.nparams; i++) {
        char *v = req->head + pos;
        long n = http_pct_decode(m.raw[i], m.raw_len[i], v, req->head_cap - pos, 0);
        if (n < 0 || strchr(v, '/') || strcmp(v, ".") == 0 || strcmp(v, "..") == 0) {
            refuse(s, 400, "bad_target",
                   "a path segment has a bad percent-escape, an encoded '/' or is '.' or '..'");
            fail_now(s);
            return;
        }
        req->pnames[i] = m.names[i];
        req->pvals[i] = pos;
        pos += (size_t)n + 1;
    }
    req->nparams = m.nparams;
    int rc = m.route->fn(req, m.route->arg);
    if (req->replied || rc == MT_HTTP_ASYNC)
        return;
    reply_own(s, 500, "internal", "the handler returned without a reply: a bug in the server",
              NULL);
}

/* ---- input ---------------------------------------------------------------------- */

/*
 * One byte of the head.  @return 0 go on, 1 the head is complete, 2 an empty line before
 * the request line (dropped), -1 refused.
 */
static int scan_head(struct mt_http_session *s, unsigned char c)
{
    if (s->prev_cr) {
        s->prev_cr = 0;
        if (c != '\n')
            return refuse(s, 400, "bad_request", "a CR in the request head without LF");
        if (s->line_len == 0) {
            if (s->line_no > 0)
                return 1;
            if (++s->empty_lines > LEADING_EMPTY_MAX)
                return refuse(s, 400, "bad_request", "empty lines instead of a request line");
            return 2;
        }
        if (s->line_no == 0 && s->sp != 2)
            return refuse(s, 400, "bad_request",
                          "malformed request line: send 'METHOD /path HTTP/1.1'");
        s->line_no++;
        s->line_len = 0;
        return 0;
    }
    if (c == '\r') {
        s->prev_cr = 1;
        return 0;
    }
    if (c == '\n')
        return refuse(s, 400, "bad_request", "lines must end with CRLF, not a bare LF");
    if ((c == ' ' || c == '\t') && s->line_len == 0)
        return s->line_no ? refuse(s, 400, "bad_request",
                                   "header continuation lines (obs-fold) are not accepted: put "
                                   "each header on one line")
                          : refuse(s, 400, "bad_request",
                                   "malformed request line: send 'METHOD /path HTTP/1.1'");
    if ((c < 0x20 && c != '\t') || c == 0x7f)
        return refuse(s, 400, "bad_request", "a control character in the request head");
    if (s->line_no == 0) {
        if (c == '\t' || c >= 0x80 || (c == ' ' && s->prev == ' '))
            return refuse(s, 400, "bad_request",
                          "malformed request line: send 'METHOD /path HTTP/1.1' in ASCII");
        s->sp += c == ' ';
    }
    s->prev = c;
    s->line_len++;
    return 0;
}

/* What to tell a client whose request http_parser refused. */
static void refuse_parser(struct mt_http_session *s, enum http_errno e)
{
    switch (e) {
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        refuse(s, 400, "bad_framing",
               "more than one Content-Length, or Content-Length with Transfer-Encoding: send "
               "exactly one of them, once");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
        if (s->st == ST_BODY)
            refuse(s, 400, "bad_framing", "a chunk size is not a hexadecimal number in range");
        else
            refuse(s, 400, "bad_framing", "Content-Length is not a decimal number of bytes");
        break;
    case HPE_INVALID_CHUNK_SIZE:
        refuse(s, 400, "bad_framing", "a chunk size line is malformed");
        break;
    case HPE_INVALID_METHOD:
        refuse(s, 400, "bad_method", "unknown method: use GET, POST, PUT, DELETE, ...");
        break;
    case HPE_INVALID_VERSION:
    case HPE_INVALID_CONSTANT:
        refuse(s, 400, "bad_request", "malformed HTTP version: send HTTP/1.1");
        break;
    case HPE_INVALID_HEADER_TOKEN:
        refuse(s, 400, "bad_header", "a malformed header line: send 'Name: value' lines");
        break;
    default: refuse(s, 400, "bad_request", "malformed request: %s", http_errno_description(e));
    }
}

/* The complete head goes through http_parser in one call. */
static void head_complete(struct mt_http_session *s, int64_t now)
{
    struct mt_http_req *req = s->req;
    http_parser_init(&s->hp, HTTP_REQUEST);
    s->hp.data = s;
    http_parser_execute(&s->hp, &settings, req->head, req->head_len);
    enum http_errno e = HTTP_PARSER_ERRNO(&s->hp);
    if (!s->fail_status && e != HPE_OK && e != HPE_PAUSED)
        refuse_parser(s, e);
    if (!s->fail_status && !s->headers_done)
        refuse(s, 400, "bad_request", "malformed request head");
    if (s->fail_status) {
        fail_now(s);
        return;
    }
    if (s->msg_done) {
        dispatch(s);
        return;
    }
    s->st = ST_BODY;
    s->body_start = now;
}

static size_t feed_head(struct mt_http_session *s, const unsigned char *p, size_t n, int64_t now)
{
    struct mt_http_req *req = s->req;
    for (size_t k = 0; k < n; k++) {
        if (req->head_len >= s->lim.max_head) {
            refuse(s, 431, "head_too_large",
                   "the request line and headers are larger than %zu bytes: send fewer or "
                   "shorter headers",
                   s->lim.max_head);
            fail_now(s);
            return k;
        }
        int r = scan_head(s, p[k]);
        if (r < 0) {
            fail_now(s);
            return k + 1;
        }
        if (req->head_len == req->head_cap) {
            size_t cap = req->head_cap * 2;
            char *h = realloc(req->head, cap);
            if (!h) {
                s->nomem = 1;
                return k;
            }
            req->head = h;
            req->head_cap = cap;
        }
        req->head[req->head_len++] = (char)p[k];
        if (r == 2)
            req->head_len = 0;
        if (r == 1) {
            head_complete(s, now);
            return k + 1;
        }
    }
    return n;
}

static size_t feed_body(struct mt_http_session *s, const char *p, size_t n)
{
    s->scan = p;
    size_t k = http_parser_execute(&s->hp, &settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&s->hp);
    if (s->chunked && !s->fail_status)
        scan_framing(s, s->scan, p + k);
    if (!s->fail_status && e != HPE_OK && e != HPE_PAUSED)
        refuse_parser(s, e);
    if (s->fail_status)
        fail_now(s);
    else if (s->msg_done)
        dispatch(s);
    return k;
}

ssize_t mt_http_session_feed(struct mt_http_session *s, const void *data, size_t len,
                             int64_t now_ms)
{
    const char *in = data;
    size_t i = 0;
    s->last_now = now_ms;
    if (s->idle_pending) {
        s->idle_start = now_ms;
        s->idle_pending = 0;
    }
    s->in_call = 1;
    while (i < len && !s->nomem) {
        enum st before = s->st;
        size_t k = 0;
        if (s->st == ST_CLOSING) {
            i = len; /* nothing after an error or a close is read */
            break;
        }
        if (s->st == ST_HANDLER)
            break;
        if (s->st == ST_IDLE) {
            if (out_pending(s) > OUT_HIGH)
                break; /* the client is not reading: do not queue more */
            s->st = ST_HEAD;
            s->head_start = s->nreq == 0 ? s->created : now_ms;
        }
        if (s->st == ST_HEAD)
            k = feed_head(s, (const unsigned char *)in + i, len - i, now_ms);
        else
            k = feed_body(s, in + i, len - i);
        i += k;
        if (k == 0 && s->st == before && !s->nomem) {
            refuse(s, 500, "internal", "the request parser made no progress");
            fail_now(s); /* cannot happen; never spin if it does */
        }
    }
    s->in_call = 0;
    return s->nomem ? MESHTLS_ENOMEM : (ssize_t)i;
}

void mt_http_session_eof(struct mt_http_session *s)
{
    s->eof = 1;
    if (s->st != ST_HANDLER) {
        s->st = ST_CLOSING;
        s->want_close = 1;
    }
}

/* ---- session -------------------------------------------------------------------- */

int mt_http_session_new(const struct mt_http_router *router, const struct mt_http_limits *limits,
                        const char *client_addr, mt_http_wake_fn wake, void *driver_arg,
                        int64_t now_ms, struct mt_http_session **out)
{
    struct mt_http_session *s = calloc(1, sizeof(*s));
    struct mt_http_req *req = calloc(1, sizeof(*req));
    if (!s || !req)
        goto nomem;
    if (limits)
        s->lim = *limits;
    else
        mt_http_limits_default(&s->lim);
    if (s->lim.max_head < 64)
        s->lim.max_head = 64;
    if (s->lim.max_head > HEAD_LIMIT)
        s->lim.max_head = HEAD_LIMIT;
    if (s->lim.max_headers == 0)
        s->lim.max_headers = 1;
    req->head = malloc(HEAD_INIT);
    req->hdrs = calloc(s->lim.max_headers, sizeof(struct http_hdr));
    if (!req->head || !req->hdrs)
        goto nomem;
    req->head_cap = HEAD_INIT;
    req->query_off = SIZE_MAX;
    req->s = s;
    if (client_addr)
        snprintf(req->client_addr, sizeof(req->client_addr), "%s", client_addr);
    s->req = req;
    s->router = router;
    s->wake = wake;
    s->drv = driver_arg;
    s->created = s->last_now = s->idle_start = now_ms;
    parse_reset(s);
    *out = s;
    return 0;
nomem:
    req_free(req);
    free(s);
    return MESHTLS_ENOMEM;
}

void mt_http_session_free(struct mt_http_session *s)
{
    if (!s)
        return;
    struct mt_http_req *req = s->req;
    s->req = NULL;
    if (req && s->st == ST_HANDLER && !req->replied) {
        /* The handler still holds req: detach it; its reply call frees it. */
        req->s = NULL;
        if (req->abort_fn)
            req->abort_fn(req, req->abort_arg); /* may reply, and so free req, right here */
    } else {
        req_free(req);
    }
    free(s->out.p);
    free(s);
}

void mt_http_session_set_conn_data(struct mt_http_session *s, void *conn_data)
{
    s->conn_data = conn_data;
}

void mt_http_session_output(struct mt_http_session *s, const void **ptr, size_t *len)
{
    *ptr = s->out.p ? s->out.p + s->out.off : (const void *)"";
    *len = out_pending(s);
}

void mt_http_session_output_done(struct mt_http_session *s, size_t n)
{
    if (n > out_pending(s))
        n = out_pending(s);
    s->out.off += n;
    if (s->out.off == s->out.len) {
        s->out.off = s->out.len = 0;
        if (s->out.cap > 1024 * 1024) { /* a large response came and went */
            free(s->out.p);
            s->out.p = NULL;
            s->out.cap = 0;
        }
    }
}

int mt_http_session_error(const struct mt_http_session *s, const char **msg)
{
    if (msg)
        *msg = s->fail_status ? s->fail_msg : NULL;
    return s->fail_status;
}

int mt_http_session_want_close(const struct mt_http_session *s)
{
    return s->want_close;
}

int mt_http_session_want_input(const struct mt_http_session *s)
{
    switch (s->st) {
    case ST_IDLE: return out_pending(s) <= OUT_HIGH;
    case ST_HEAD:
    case ST_BODY: return 1;
    default: return 0;
    }
}

int64_t mt_http_session_deadline(const struct mt_http_session *s)
{
    switch (s->st) {
    case ST_IDLE:
        return s->nreq == 0 ? add_sat(s->created, s->lim.head_ms)
                            : add_sat(s->idle_start, s->lim.idle_ms);
    case ST_HEAD: return add_sat(s->head_start, s->lim.head_ms);
    case ST_BODY: return add_sat(s->body_start, s->lim.body_ms);
    default: return INT64_MAX;
    }
}

int mt_http_session_timeout(struct mt_http_session *s, int64_t now_ms)
{
    s->last_now = now_ms;
    if (s->idle_pending) {
        s->idle_start = now_ms;
        s->idle_pending = 0;
    }
    if (now_ms < mt_http_session_deadline(s))
        return 0;
    if (s->st == ST_HEAD || s->st == ST_BODY) {
        s->in_call = 1;
        refuse(s, 408, "timeout",
               "the request did not arrive in time: send it whole within %lld ms",
               (long long)(s->st == ST_HEAD ? s->lim.head_ms : s->lim.body_ms));
        fail_now(s);
        s->in_call = 0;
    } else {
        s->st = ST_CLOSING; /* idle: close without a word, as nginx does */
        s->want_close = 1;
    }
    return 1;
}

/* ---- request accessors ---------------------------------------------------------- */

const char *mt_http_req_method(const struct mt_http_req *req)
{
    return http_method_str((enum http_method)req->method);
}

const char *mt_http_req_path(const struct mt_http_req *req)
{
    return req->head + req->path_off;
}

const char *mt_http_req_query(const struct mt_http_req *req)
{
    return req->query_off == SIZE_MAX ? "" : req->head + req->query_off;
}

const char *mt_http_req_header(const struct mt_http_req *req, const char *name)
{
    for (unsigned i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        if (strcasecmp(req->head + h->name, name) == 0)
            return h->val == NO_VALUE ? "" : req->head + h->val;
    }
    return NULL;
}

const char *mt_http_req_param(const struct mt_http_req *req, const char *name)
{
    for (unsigned i = 0; i < req->nparams; i++)
        if (strcmp(req->pnames[i], name) == 0)
            return req->head + req->pvals[i];
    return NULL;
}

const void *mt_http_req_body(const struct mt_http_req *req, size_t *len)
{
    *len = req->body_len;
    return req->body_len ? req->body : NULL;
}

int mt_http_req_json(const struct mt_http_req *req, json_t **out, struct meshtls_err *err)
{
    json_error_t je;
    if (req->body_len == 0)
        return meshtls_err_set(err, MESHTLS_EPARSE,
                               "the request body is empty: send a JSON document");
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return meshtls_err_set(err, MESHTLS_EPARSE,
                               "the request body is not valid JSON: %s (line %d, column %d)",
                               je.text, je.line, je.column);
    *out = j;
    return 0;
}

int mt_http_query_get(const struct mt_http_req *req, const char *name, char *buf, size_t cap)
{
    const char *q = mt_http_req_query(req);
    char key[128];
    if (cap == 0 || strlen(name) >= sizeof(key))
        return MESHTLS_EINVAL;
    while (*q) {
        size_t pl = strcspn(q, "&");
        const char *eq = memchr(q, '=', pl);
        size_t kl = eq ? (size_t)(eq - q) : pl;
        long n = http_pct_decode(q, kl, key, sizeof(key), 1);
        if (n >= 0 && strcmp(key, name) == 0) {
            const char *v = eq ? eq + 1 : q + pl;
            size_t vl = (size_t)(q + pl - v);
            n = http_pct_decode(v, vl, buf, cap, 1);
            return n < 0 ? MESHTLS_EINVAL : (int)n;
        }
        q += pl;
        if (*q == '&')
            q++;
    }
    return MESHTLS_ENOENT;
}

void *mt_http_req_conn_data(const struct mt_http_req *req)
{
    return req->s ? req->s->conn_data : NULL;
}

void *mt_http_req_driver_arg(const struct mt_http_req *req)
{
    return req->s ? req->s->drv : NULL;
}

const char *mt_http_req_client_addr(const struct mt_http_req *req)
{
    return req->client_addr;
}

void mt_http_req_set_abort(struct mt_http_req *req, void (*fn)(struct mt_http_req *, void *),
                           void *arg)
{
    req->abort_fn = fn;
    req->abort_arg = arg;
}

/* ---- replies -------------------------------------------------------------------- */

int mt_http_reply_header(struct mt_http_req *req, const char *name, const char *value)
{
    static const char *const own[] = {"content-length", "content-type", "connection",
                                      "transfer-encoding"};
    if (!req->s)
        return 0; /* detached: the reply will go nowhere anyway */
    if (!name[0] || !value_ok(value))
        return MESHTLS_EINVAL;
    for (const char *p = name; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return MESHTLS_EINVAL;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strcasecmp(name, own[i]) == 0)
            return MESHTLS_EINVAL;
    size_t nl = strlen(name), vl = strlen(value);
    if (!req->xh && !(req->xh = malloc(XHDR_MAX)))
        return MESHTLS_ENOMEM;
    if (nl + vl + 4 > XHDR_MAX - req->xh_len)
        return MESHTLS_ENOMEM;
    char *p = req->xh + req->xh_len;
    memcpy(p, name, nl);
    memcpy(p + nl, ": ", 2);
    memcpy(p + nl + 2, value, vl);
    memcpy(p + nl + 2 + vl, "\r\n", 2);
    req->xh_len += nl + vl + 4;
    return 0;
}

int mt_http_reply(struct mt_http_req *req, int status, const char *content_type, const void *body,
                  size_t len)
{
    struct mt_http_session *s = req->s;
    if (!s) {
        req_free(req); /* the connection went away; the handler's hold ends here */
        return MESHTLS_ENOENT;
    }
    if (s->st != ST_HANDLER || s->req != req || req->replied)
        return MESHTLS_EINVAL; /* a second reply: a bug in the caller */
    req->replied = 1;
    if (status < 200 || status > 599 || (content_type && !value_ok(content_type)) ||
        (content_type && strlen(content_type) > 200)) {
        status = 500; /* a bug in the handler: say so rather than send a broken response */
        content_type = NULL;
        body = NULL;
        len = 0;
    }
    int close =
        !s->keep_alive || s->eof || (s->lim.max_requests && s->nreq + 1 >= s->lim.max_requests);
    int rc = respond(s, status, content_type, body, len,
                     close          ? 1
                     : s->ka_header ? 2
                                    : 0,
                     req->xh, req->xh_len);
    if (rc != 0) {
        s->nomem = 1;
        close = 1;
    }
    request_done(s, close);
    if (!s->in_call && s->wake)
        s->wake(s->drv);
    return rc == 0 ? 0 : MESHTLS_ENOMEM;
}

int mt_http_reply_json(struct mt_http_req *req, int status, json_t *json)
{
    char *body = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(json);
    if (!body) {
        if (!req->s)
            return mt_http_reply(req, 500, NULL, NULL, 0);
        return mt_http_reply_error(req, 500, "internal", "the response could not be encoded");
    }
    int rc = mt_http_reply(req, status, "application/json", body, strlen(body));
    free(body);
    return rc;
}

int mt_http_reply_error(struct mt_http_req *req, int status, const char *code, const char *message)
{
    if (!req->s)
        return mt_http_reply(req, status, NULL, NULL, 0);
    char *body = error_json(code, message);
    int rc = body ? mt_http_reply(req, status, "application/json", body, strlen(body))
                  : mt_http_reply(req, 500, NULL, NULL, 0);
    free(body);
    return rc;
}

/* ---- helpers for the driver ----------------------------------------------------- */

enum mt_http_sniff mt_http_sniff(const void *buf, size_t len)
{
    static const char *const methods[] = {"GET ",   "HEAD ",    "POST ",    "PUT ",  "DELETE ",
                                          "PATCH ", "OPTIONS ", "CONNECT ", "TRACE "};
    const char *b = buf;
    if (len == 0)
        return MT_HTTP_SNIFF_MORE;
    if ((unsigned char)b[0] == 0x16)
        return MT_HTTP_SNIFF_TLS;
    int prefix = 0;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t ml = strlen(methods[i]);
        if (len >= ml && memcmp(b, methods[i], ml) == 0)
            return MT_HTTP_SNIFF_HTTP;
        if (len < ml && memcmp(b, methods[i], len) == 0)
            prefix = 1;
    }
    return prefix ? MT_HTTP_SNIFF_MORE : MT_HTTP_SNIFF_OTHER;
}

size_t mt_http_error_response(int status, const char *code, const char *message, char *buf,
                              size_t cap)
{
    if (status < 100 || status > 599)
        return 0;
    char *body = error_json(code, message);
    if (!body)
        return 0;
    size_t bl = strlen(body);
    size_t hl = fmt_head(buf, cap, status, "application/json", bl, 1, NULL, 0);
    size_t total = 0;
    if (hl && cap - hl >= bl) {
        memcpy(buf + hl, body, bl);
        total = hl + bl;
    }
    free(body);
    return total;
}

size_t mt_http_plaintext_on_tls_reply(int status, char *buf, size_t cap)
{
    return mt_http_error_response(status, "tls_required",
                                  "this port speaks HTTPS with client certificates: use "
                                  "https:// and present your certificate",
                                  buf, cap);
}
