/*
 * http_net.c - the driver of docs/HTTP.md on the engine: bytes between an engine
 * connection (plain or TLS) and a sans-I/O HTTP session.
 *
 * Per connection: the session, a bounded input buffer (bytes read but not yet taken by
 * the session, e.g. a pipelined request while a handler runs), and the handler's
 * connection data.  Reads happen only while the session wants input, so a client that
 * pipelines or stops reading holds at most HTTP_IN bytes here and the session's bounded
 * output there.
 */
#include <stdlib.h>
#include <string.h>

#include "http_net.h"
#include "meshtls/log.h"
#include "meshtls/tls.h"

#define HTTP_IN 16384 /* input buffer per connection */

struct http_conn {
    struct mt_http_session *s;
    char *in;
    size_t in_len;
    void *data; /* conn_data_new's */
    int eof;    /* the peer closed its side */
    unsigned char first[8];
    size_t first_len;
    int plaintext; /* a TLS listener got plaintext: answer (maybe) and close */
    char reply[512];
    size_t reply_len, reply_off;
};

static void arm_timer(struct mt_conn *c);

static inline struct http_conn *H(struct mt_conn *c)
{
    return mt_conn_proto(c);
}

static inline const struct mt_http_listener *L(const struct mt_conn *c)
{
    return mt_conn_listener_arg(c);
}

struct mt_conn *mt_http_req_conn(const struct mt_http_req *req)
{
    return mt_http_req_driver_arg(req);
}

/* An asynchronous reply was queued (on this worker): run on_io after this round. */
static void wake(void *arg)
{
    mt_conn_again(arg);
}

static int start_session(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    const struct mt_http_listener *l = L(c);
    if (l->conn_data_new && l->conn_data_new(c, &h->data) != 0) {
        mt_conn_close(c, "refused by the listener");
        return -1;
    }
    h->in = malloc(HTTP_IN);
    if (!h->in || mt_http_session_new(l->router, &l->limits, c->peer_addr, wake, c,
                                      mt_conn_now_ms(c), &h->s) != 0) {
        mt_conn_close(c, "out of memory");
        return -1;
    }
    mt_http_session_set_conn_data(h->s, h->data);
    return 0;
}

static void on_tls_done(struct mt_conn *c, struct mt_end *e)
{
    (void)e;
    if (start_session(c) == 0) {
        c->down.rd_ready = c->down.wr_ready = 1; /* OpenSSL may hold the request already */
        arm_timer(c);
    }
}

static void on_tls_error(struct mt_conn *c, struct mt_end *e, int timeout)
{
    (void)e;
    char why[256];
    if (timeout)
        snprintf(why, sizeof(why), "TLS handshake timeout");
    else
        meshtls_tls_verify_failure(c->down.ssl, why, sizeof(why));
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "refused",
                      MESHTLS_LF_S("listener", mt_conn_listener_name(c)),
                      MESHTLS_LF_U("conn", c->id), MESHTLS_LF_S("client", c->peer_addr),
                      MESHTLS_LF_S("reason", why[0] ? why : "TLS handshake failed"));
}

/* A TLS listener saw a first byte that cannot start TLS. */
static void on_plaintext(struct mt_conn *c)
{
    H(c)->plaintext = 1;
}

/* Plaintext on a TLS port: read the first bytes; an HTTP request gets the listener's
 * plaintext answer (e.g. 403 "TLS required"), anything else is closed. */
static void step_plaintext(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    if (h->reply_len == 0) {
        while (h->first_len < sizeof(h->first) && c->down.rd_ready) {
            ssize_t n = mt_end_read(&c->down, (char *)h->first + h->first_len,
                                    sizeof(h->first) - h->first_len);
            if (n <= 0) {
                if (n != -1)
                    h->eof = 1;
                break;
            }
            h->first_len += (size_t)n;
        }
        enum mt_http_sniff k = mt_http_sniff(h->first, h->first_len);
        if (k == MT_HTTP_SNIFF_MORE && !h->eof)
            return;
        if (k != MT_HTTP_SNIFF_HTTP || !L(c)->plaintext_status) {
            mt_conn_close(c, "plaintext on the TLS port");
            return;
        }
        h->reply_len =
            mt_http_plaintext_on_tls_reply(L(c)->plaintext_status, h->reply, sizeof(h->reply));
        /* take what the client sent (bounded) so closing does not reset the answer */
        char junk[4096];
        for (int i = 0; i < 4 && c->down.rd_ready && mt_end_read(&c->down, junk, sizeof(junk)) > 0;
             i++)
            ;
    }
    while (h->reply_off < h->reply_len && c->down.wr_ready) {
        ssize_t n = mt_end_write(&c->down, h->reply + h->reply_off, h->reply_len - h->reply_off);
        if (n == -2)
            break;
        if (n > 0)
            h->reply_off += (size_t)n;
    }
    if (h->reply_off >= h->reply_len || !c->down.wr_ready) {
        mt_end_shut_write(&c->down);
        mt_conn_close(c, "plaintext HTTP on the TLS port: answered TLS required");
    }
}

/* Send what the session has; @return -1 if the connection closed. */
static int flush(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    for (;;) {
        const void *p = NULL;
        size_t len = 0;
        mt_http_session_output(h->s, &p, &len);
        if (len == 0)
            break;
        if (!c->down.wr_ready)
            return 0;
        ssize_t n = mt_end_write(&c->down, p, len);
        if (n == -2) {
            mt_conn_close(c, "client closed while receiving");
            return -1;
        }
        if (n < 0)
            return 0;
        mt_http_session_output_done(h->s, (size_t)n);
    }
    if (mt_http_session_want_close(h->s)) {
        mt_end_shut_write(&c->down);
        const char *msg = NULL;
        mt_conn_close(c, mt_http_session_error(h->s, &msg) && msg ? msg : "done");
        return -1;
    }
    return 0;
}

static void arm_timer(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    const void *p = NULL;
    size_t len = 0;
    mt_http_session_output(h->s, &p, &len);
    int64_t now = mt_conn_now_ms(c), d = mt_http_session_deadline(h->s);
    int wto = L(c)->write_timeout_ms > 0 ? L(c)->write_timeout_ms : 10000;
    if (len > 0 && (d == INT64_MAX || d - now > wto))
        d = now + wto; /* a response that does not drain */
    if (d == INT64_MAX)
        mt_conn_set_timeout(c, 0);
    else
        mt_conn_set_timeout(c, d - now > 0 ? (int)(d - now < INT32_MAX ? d - now : INT32_MAX) : 1);
}

/* A plain listener's session starts at once, so its time bounds (head, idle) apply to a
 * client that never sends a byte; a TLS listener's after the handshake. */
static int on_accept(struct mt_conn *c)
{
    if (!mt_conn_listener_tls(c) && start_session(c) == 0)
        arm_timer(c);
    return 0;
}

static int on_io(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    if (h->plaintext) {
        step_plaintext(c);
        return 0;
    }
    if (!h->s && start_session(c) != 0) /* a plain listener's first event */
        return 0;
    /* a zero-byte feed starts the keep-alive timer after an asynchronous reply */
    if (h->in_len == 0 && mt_http_session_feed(h->s, h->in, 0, mt_conn_now_ms(c)) < 0) {
        mt_conn_close(c, "out of memory");
        return 0;
    }
    for (int round = 0; round < 16; round++) {
        if (flush(c) != 0)
            return 0;
        int progress = 0;
        /* bytes held back (a pipelined request while a handler ran) go first */
        if (h->in_len && mt_http_session_want_input(h->s)) {
            ssize_t n = mt_http_session_feed(h->s, h->in, h->in_len, mt_conn_now_ms(c));
            if (n < 0) {
                mt_conn_close(c, "out of memory");
                return 0;
            }
            if (n > 0) {
                memmove(h->in, h->in + n, h->in_len - (size_t)n);
                h->in_len -= (size_t)n;
                progress = 1;
            }
        }
        if (!h->eof && h->in_len < HTTP_IN && c->down.rd_ready &&
            mt_http_session_want_input(h->s)) {
            ssize_t n = mt_end_read(&c->down, h->in + h->in_len, HTTP_IN - h->in_len);
            if (n > 0) {
                h->in_len += (size_t)n;
                progress = 1;
            } else if (n == 0 || n == -2) {
                h->eof = 1;
                mt_http_session_eof(h->s);
                progress = 1;
            }
        }
        if (!progress)
            break;
    }
    if (flush(c) != 0)
        return 0;
    if (h->eof && !h->in_len) {
        const void *p = NULL;
        size_t len = 0;
        mt_http_session_output(h->s, &p, &len);
        if (len == 0 && mt_http_session_want_input(h->s)) {
            mt_conn_close(c, "client closed"); /* nothing more will come */
            return 0;
        }
    }
    arm_timer(c);
    return 0;
}

static void on_timeout(struct mt_conn *c)
{
    struct http_conn *h = H(c);
    if (!h->s) {
        mt_conn_close(c, "timeout");
        return;
    }
    const void *p = NULL;
    size_t len = 0;
    mt_http_session_output(h->s, &p, &len);
    if (len > 0 && mt_http_session_deadline(h->s) > mt_conn_now_ms(c)) {
        mt_conn_close(c, "response not read in time");
        return;
    }
    /* A fired bound queues a 408 (head or body too slow) or marks an idle connection
     * closing: flush sends it and then closes.  Returning before the flush would leave
     * the 408 unsent and the next sweep would drop the connection without a word. */
    mt_http_session_timeout(h->s, mt_conn_now_ms(c));
    if (flush(c) != 0)
        return;
    if (!mt_conn_closed(c))
        arm_timer(c);
}

static void on_close(struct mt_conn *c, const char *why)
{
    struct http_conn *h = H(c);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_DEBUG, "close",
                      MESHTLS_LF_S("listener", mt_conn_listener_name(c)),
                      MESHTLS_LF_U("conn", c->id), MESHTLS_LF_S("client", c->peer_addr),
                      MESHTLS_LF_S("reason", why ? why : "done"));
    mt_http_session_free(h->s); /* detaches a request a handler still holds */
    h->s = NULL;
    free(h->in);
    h->in = NULL;
    if (h->data && L(c)->conn_data_free)
        L(c)->conn_data_free(h->data);
    h->data = NULL;
}

const struct mt_proto_ops mt_http_proto = {
    .name = "http",
    .proto_size = sizeof(struct http_conn),
    .on_accept = on_accept,
    .on_plaintext = on_plaintext,
    .on_tls_done = on_tls_done,
    .on_tls_error = on_tls_error,
    .on_io = on_io,
    .on_timeout = on_timeout,
    .on_close = on_close,
};
