/*
 * relay.c - the protocol of `meshtls proxy server|client` on the shared engine:
 * after the TLS handshake, identity and policy (server), connect to the target,
 * optionally run a second handshake towards it, then copy bytes both ways with
 * half-close.
 *
 * Sub-states of a connection in the engine's MT_CONN_PROTO (struct px_conn.sub):
 *   PX_CONNECT     non-blocking connect() to the target in progress
 *   PX_RELAY       copying bytes both ways
 * The handshakes themselves are the engine's (MT_CONN_TLS); it calls on_tls_done
 * or on_tls_error.  Everything a connection reads from the configuration comes
 * from the snapshot it started with (struct px_snap, c->snap).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "meshtls/log.h"
#include "meshtls/x509.h"
#include "http1.h"
#include "proxy.h"
#include "proxyv2.h"

#define PX_RAW 16384   /* --forward-identity http-headers: unfiltered client bytes */
#define PX_STEP_MAX 32 /* read/write rounds per event before yielding */

enum px_sub { PX_IDLE = 0, PX_CONNECT, PX_RELAY };

/* The relay's state of one connection (the engine's proto area). */
struct px_conn {
    enum px_sub sub;
    char *buf[2];     /* [0] down->up, [1] up->down; MT_BUF each, only while bytes are in flight */
    struct px_h1 *h1; /* --forward-identity http-headers: request filter (down->up) */
    char *inject;     /* the identity headers for each request */
    char *raw;        /* unfiltered client bytes waiting for the filter */
    size_t raw_off, raw_len;
    size_t off[2], len[2];
    unsigned long long bytes[2];
    /* Text for the logs, allocated only when there is some: an idle connection keeps
     * ~100 bytes here instead of a kilobyte of fixed buffers. */
    char *who;            /* peer identity (SPIFFE ID or subject) */
    char *serial;         /* peer certificate serial */
    const char *decision; /* "allow" / "deny" (static) */
    const char *why;      /* closing reason: static, or why_owned */
    char *why_owned;
};

static inline struct px_conn *P(struct mt_conn *c)
{
    return mt_conn_proto(c);
}

static inline const struct px_snap *S(const struct mt_conn *c)
{
    return (const struct px_snap *)c->snap;
}

static inline const struct px_config *CFG(const struct mt_conn *c)
{
    return mt_conn_listener_arg(c);
}

/* The closing reason, formatted (kept to 300 bytes).  Out of memory leaves a fixed one. */
__attribute__((format(printf, 2, 3))) static void set_why(struct px_conn *p, const char *fmt, ...)
{
    free(p->why_owned);
    p->why_owned = malloc(300);
    if (p->why_owned) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->why_owned, 300, fmt, ap);
        va_end(ap);
    }
    p->why = p->why_owned ? p->why_owned : "error (out of memory formatting the reason)";
}

static void on_close(struct mt_conn *c, const char *why)
{
    struct px_conn *p = P(c);
    if (why && !p->why)
        p->why = why;
    int64_t dur = mt_now_us() - c->start_us;
    meshtls_log(MESHTLS_LOG_INFO,
                "close client=%s id=%s serial=%s decision=%s bytes_up=%llu bytes_down=%llu "
                "duration_ms=%.1f reason=\"%s\"",
                c->peer_addr, p->who ? p->who : "-", p->serial ? p->serial : "-",
                p->decision ? p->decision : "-", p->bytes[0], p->bytes[1], (double)dur / 1000.0,
                p->why ? p->why : "done");
    atomic_fetch_add(&px_metrics.bytes_up, p->bytes[0]);
    atomic_fetch_add(&px_metrics.bytes_down, p->bytes[1]);
    mt_buf_put(c, p->buf[0]);
    mt_buf_put(c, p->buf[1]);
    p->buf[0] = p->buf[1] = NULL;
    free(p->h1);
    free(p->inject);
    free(p->raw);
    free(p->who);
    free(p->serial);
    free(p->why_owned);
    p->h1 = NULL, p->inject = p->raw = p->who = p->serial = p->why_owned = NULL;
}

static void start_connect(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    const struct px_snap *s = S(c);
    int fd = socket(s->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mt_conn_close_clean(c, "cannot create a socket for the target");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->up.fd = fd;
    if (connect(fd, (const struct sockaddr *)&s->target, s->target_len) != 0 &&
        errno != EINPROGRESS) {
        set_why(p, "cannot connect to target %s: %s", s->target_name, strerror(errno));
        atomic_fetch_add(&px_metrics.backend_errors, 1);
        mt_conn_close_clean(c, NULL);
        return;
    }
    if (mt_conn_watch(c, &c->up) != 0) {
        mt_conn_close(c, "epoll_ctl failed");
        return;
    }
    p->sub = PX_CONNECT;
    mt_conn_set_timeout(c, s->connect_timeout_ms);
}

static int on_accept(struct mt_conn *c)
{
    if (S(c)->mode == PX_MODE_CLIENT)
        start_connect(c); /* the plaintext client is served as soon as the target answers */
    return 0;
}

/* Queue a PROXY v2 header announcing the client and its identity. */
static void queue_pp2(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    struct sockaddr_storage local;
    socklen_t ll = sizeof(local);
    if (getsockname(c->down.fd, (struct sockaddr *)&local, &ll) != 0)
        memcpy(&local, &c->peer_sa, sizeof(c->peer_sa));
    struct meshtls_identity *id = NULL;
    meshtls_tls_peer_identity(c->down.ssl, &id, NULL);
    struct px_pp2_tls t = {
        .version = SSL_get_version(c->down.ssl),
        .cipher = SSL_get_cipher_name(c->down.ssl),
        .sni = SSL_get_servername(c->down.ssl, TLSEXT_NAMETYPE_host_name),
        .cn = id ? id->cn : NULL,
        .spiffe_id = id ? id->spiffe_id : NULL,
    };
    size_t n = px_pp2_build((unsigned char *)p->buf[0], MT_BUF, &c->peer_sa.sa,
                            (struct sockaddr *)&local, &t);
    meshtls_identity_free(id);
    p->off[0] = 0;
    p->len[0] = n;
}

/* Copy `s` into a header value: no control characters, quotes escaped if `q`. */
static size_t hval(char *out, size_t cap, const char *s, int q)
{
    size_t n = 0;
    for (; s && *s && n + 3 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f)
            ch = '?';
        if (q && (ch == '"' || ch == '\\'))
            out[n++] = '\\';
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    return n;
}

/* Build the identity headers (X-Client-Cert-*, Envoy-style XFCC) for `c`. */
static int build_inject(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    struct meshtls_identity *id = NULL;
    char subj[600], qsubj[1200], uri[600], hash[65] = "";
    unsigned char md[32];
    unsigned int mdl = 0;
    X509 *peer = SSL_get0_peer_certificate(c->down.ssl);
    if (!peer || meshtls_identity_from_x509(peer, &id, NULL) != 0)
        return -1;
    if (X509_digest(peer, EVP_sha256(), md, &mdl) == 1)
        for (unsigned i = 0; i < mdl && i < 32; i++)
            snprintf(hash + 2 * i, 3, "%02x", md[i]);
    hval(subj, sizeof(subj), id->subject, 0);
    hval(qsubj, sizeof(qsubj), id->subject, 1);
    hval(uri, sizeof(uri), id->spiffe_id ? id->spiffe_id : "", 0);
    p->inject = malloc(4096);
    if (p->inject)
        snprintf(p->inject, 4096,
                 "X-Client-Cert-Subject: %s\r\nX-Client-Cert-Serial: %s\r\n"
                 "X-Forwarded-Client-Cert: Hash=%s;Subject=\"%s\"%s%s\r\n",
                 subj, id->serial, hash, qsubj, uri[0] ? ";URI=" : "", uri);
    meshtls_identity_free(id);
    return p->inject ? 0 : -1;
}

static int start_relay(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    const struct px_snap *s = S(c);
    if (s->mode == PX_MODE_SERVER && s->forward_http) {
        p->h1 = calloc(1, sizeof(*p->h1));
        p->raw = malloc(PX_RAW);
        if (!p->h1 || !p->raw || build_inject(c) != 0) {
            mt_conn_close(c, "out of memory");
            return -1;
        }
    }
    if (s->mode == PX_MODE_SERVER && s->forward_pp2) {
        if (!(p->buf[0] = mt_buf_get(c))) {
            mt_conn_close(c, "out of memory");
            return -1;
        }
        queue_pp2(c);
    }
    /* Identity, policy, PROXY v2 and the identity headers are done with the peer's chain:
     * free the verified copy OpenSSL keeps per connection (the session's own intermediates
     * went when the session cache stored it, src/lib/tls.c).  The stack is this SSL's alone. */
    for (int i = 0; i < 2; i++) {
        SSL *ssl = i ? c->up.ssl : c->down.ssl;
        STACK_OF(X509) *vc = ssl ? SSL_get0_verified_chain(ssl) : NULL;
        X509 *x;
        while (vc && (x = sk_X509_pop(vc)) != NULL)
            X509_free(x);
    }
    p->sub = PX_RELAY;
    mt_conn_set_proto(c);
    mt_conn_set_timeout(c, s->idle_timeout_ms);
    /* OpenSSL may already hold application data read with the handshake, and the target
     * may have answered: start with both ends ready, the first EAGAIN clears them. */
    c->down.rd_ready = c->down.wr_ready = c->up.rd_ready = c->up.wr_ready = 1;
    return 0;
}

/* A handshake finished on `t`: identity, policy, next step. */
static void on_tls_done(struct mt_conn *c, struct mt_end *t)
{
    struct px_conn *p = P(c);
    const struct px_snap *s = S(c);
    if (!t->is_down && s->mode == PX_MODE_SERVER) { /* --target-tls leg done */
        start_relay(c);
        return;
    }
    px_metrics_handshake((double)(mt_now_us() - c->start_us) / 1e6);
    atomic_fetch_add(&px_metrics.hs_ok, 1);
    struct meshtls_identity *id = NULL;
    if (meshtls_tls_peer_identity(t->ssl, &id, NULL) == 0) {
        p->who = strdup(id->spiffe_id ? id->spiffe_id : id->subject ? id->subject : "-");
        p->serial = id->serial ? strdup(id->serial) : NULL;
    }
    if (s->mode == PX_MODE_SERVER) {
        struct meshtls_decision d;
        /* the policy of the snapshot this connection started with (a reload may have
         * published another since); no policy: denied (fail closed) */
        meshtls_policy_check(s->policy, id, CFG(c)->service, &d);
        p->decision = d.allow ? "allow" : "deny";
        meshtls_log(d.allow ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN,
                    "audit policy decision=%s client=%s id=%s serial=%s rule=\"%s\" reason=\"%s\"",
                    p->decision, c->peer_addr, p->who ? p->who : "-", p->serial ? p->serial : "-",
                    d.rule, d.reason);
        meshtls_identity_free(id);
        if (!d.allow) {
            atomic_fetch_add(&px_metrics.deny, 1);
            mt_end_shut_write(t); /* close_notify, then close: the client reads EOF */
            mt_conn_close(c, "denied by policy");
            return;
        }
        atomic_fetch_add(&px_metrics.allow, 1);
        start_connect(c); /* target connect starts as soon as policy allows */
        return;
    }
    meshtls_identity_free(id);
    start_relay(c);
}

static void on_tls_error(struct mt_conn *c, struct mt_end *t, int timeout)
{
    struct px_conn *p = P(c);
    atomic_fetch_add(&px_metrics.hs_fail, 1);
    if (timeout) {
        atomic_fetch_add(&px_metrics.hs_err[PX_HSE_TIMEOUT], 1);
        p->why = "TLS handshake timeout";
        return;
    }
    char why[256];
    struct meshtls_err e = MESHTLS_ERR_INIT;
    meshtls_tls_verify_failure(t->ssl, why, sizeof(why));
    long v = SSL_get_verify_result(t->ssl);
    int no_cert = t->is_down && v == X509_V_OK && strstr(why, "no certificate");
    atomic_fetch_add(&px_metrics.hs_err[px_metrics_classify(v, no_cert)], 1);
    meshtls_err_set_ssl(&e, MESHTLS_ETLS, "TLS handshake with %s failed%s%s",
                        t->is_down ? "client" : "target", why[0] ? ": " : "", why);
    set_why(p, "%s", e.msg);
    meshtls_log(MESHTLS_LOG_WARN, "client=%s %s", c->peer_addr, e.msg);
}

static void step_connect(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    const struct px_snap *s = S(c);
    /* Only the target socket's own EPOLLOUT (connected) or EPOLLERR/EPOLLHUP (refused)
     * ends the connect; an event from the client end leaves it in flight. */
    if (!c->up.wr_ready)
        return;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr == EINPROGRESS || soerr == EALREADY)
        return;
    if (soerr != 0) {
        set_why(p, "cannot connect to target %s: %s", s->target_name, strerror(soerr));
        atomic_fetch_add(&px_metrics.backend_errors, 1);
        meshtls_log(MESHTLS_LOG_WARN, "client=%s id=%s %s", c->peer_addr, p->who ? p->who : "-",
                    p->why);
        mt_conn_close_clean(c, NULL);
        return;
    }
    SSL_CTX *tctx = s->mode == PX_MODE_CLIENT ? s->base.ctx : s->target_ctx;
    if (tctx) { /* client mode, or --target-tls */
        SSL *ssl = NULL;
        meshtls_tls_client_ssl_new(tctx, &ssl, NULL);
        if (!ssl) {
            mt_conn_close(c, "cannot create TLS connection");
            return;
        }
        p->sub = PX_IDLE;
        mt_conn_start_tls(c, &c->up, ssl, 1, s->handshake_timeout_ms);
        return;
    }
    start_relay(c);
}

/* Copy bytes both ways.  @return 1 if it stopped early (call again). */
static int step_relay(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    int progress = 1, rounds = 0;
    while (progress && rounds++ < PX_STEP_MAX) {
        progress = 0;
        for (int dir = 0; dir < 2; dir++) {
            struct mt_end *src = dir == 0 ? &c->down : &c->up;
            struct mt_end *dst = dir == 0 ? &c->up : &c->down;
            if (dst->shut_pending)
                mt_end_flush_shutdown(dst);
            if (dir == 0 && p->h1 && p->len[0] == 0) {
                /* HTTP/1.1 identity forwarding: raw bytes -> filter -> buf[0] */
                if (p->raw_len == 0 && !src->rd_eof && src->rd_ready) {
                    ssize_t n = mt_end_read(src, p->raw, PX_RAW);
                    if (n > 0) {
                        p->raw_off = 0;
                        p->raw_len = (size_t)n;
                        p->bytes[0] += (unsigned long long)n;
                        progress = 1;
                    } else if (n == 0) {
                        src->rd_eof = 1;
                        progress = 1;
                    } else if (n == -2) {
                        mt_conn_close(c, "client connection error");
                        return 0;
                    }
                }
                if (p->raw_len || p->h1->pending) {
                    if (!p->buf[0] && !(p->buf[0] = mt_buf_get(c))) {
                        mt_conn_close(c, "out of memory");
                        return 0;
                    }
                    size_t used = 0, made = 0;
                    int hr = px_h1_feed(p->h1, p->raw + p->raw_off, p->raw_len, &used, p->buf[0],
                                        MT_BUF, &made, p->inject);
                    p->raw_off += used;
                    p->raw_len -= used;
                    p->off[0] = 0;
                    p->len[0] = made;
                    if (hr != 0) {
                        mt_conn_close(c, hr == PX_H1_E_TOO_BIG
                                             ? "HTTP request head too large (16 KiB)"
                                             : "malformed HTTP/1.1 request");
                        return 0;
                    }
                    if (used || made)
                        progress = 1;
                }
            } else if (p->len[dir] == 0 && !src->rd_eof && src->rd_ready) {
                if (!p->buf[dir] && !(p->buf[dir] = mt_buf_get(c))) {
                    mt_conn_close(c, "out of memory");
                    return 0;
                }
                /* Fill the buffer before writing: a TLS end yields one record (<= 16 KiB)
                 * per call, so bulk data goes out in 64 KiB sends, not one per record. */
                size_t got = 0;
                for (;;) {
                    ssize_t n = mt_end_read(src, p->buf[dir] + got, MT_BUF - got);
                    if (n > 0) {
                        got += (size_t)n;
                        if (!src->ssl || got == MT_BUF || !src->rd_ready)
                            break; /* a plain read(2) already took all the socket had */
                        continue;
                    }
                    if (n == 0) {
                        src->rd_eof = 1;
                        progress = 1;
                    } else if (n == -2) {
                        mt_conn_close(c, dir == 0 ? "client connection error"
                                                  : "target connection error");
                        return 0;
                    }
                    break;
                }
                if (got) {
                    p->off[dir] = 0;
                    p->len[dir] = got;
                    p->bytes[dir] += (unsigned long long)got;
                    progress = 1;
                }
            }
            if (p->len[dir] > 0 && dst->wr_ready) {
                ssize_t n = mt_end_write(dst, p->buf[dir] + p->off[dir], p->len[dir]);
                if (n > 0) {
                    p->off[dir] += (size_t)n;
                    p->len[dir] -= (size_t)n;
                    progress = 1;
                } else if (n == -2) {
                    mt_conn_close(c, dir == 0 ? "target closed while sending"
                                              : "client closed while receiving");
                    return 0;
                }
            }
            if (src->rd_eof && p->len[dir] == 0 && !dst->wr_shut &&
                !(dir == 0 && p->h1 && (p->raw_len || p->h1->pending))) {
                mt_end_shut_write(dst); /* half-close follows the source */
                progress = 1;
            }
        }
        if (progress)
            mt_conn_set_timeout(c, S(c)->idle_timeout_ms);
    }
    /* Nothing in flight: give the buffers back, an idle connection holds none. */
    for (int dir = 0; dir < 2; dir++)
        if (p->len[dir] == 0 && p->buf[dir]) {
            mt_buf_put(c, p->buf[dir]);
            p->buf[dir] = NULL;
        }
    if (c->down.rd_eof && c->up.rd_eof && !p->len[0] && !p->len[1]) {
        mt_conn_close(c, NULL);
        return 0;
    }
    return progress; /* still progressing after PX_STEP_MAX rounds: yield */
}

static int on_io(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    switch (p->sub) {
    case PX_CONNECT:
        step_connect(c);
        /* entering the relay may have bytes to move right away */
        return p->sub == PX_RELAY && c->state == MT_CONN_PROTO ? step_relay(c) : 0;
    case PX_RELAY: return step_relay(c);
    case PX_IDLE: return 0;
    }
    return 0;
}

static void on_timeout(struct mt_conn *c)
{
    if (P(c)->sub == PX_CONNECT) {
        atomic_fetch_add(&px_metrics.backend_errors, 1);
        mt_conn_close_clean(c, "timeout connecting to the target");
    } else {
        mt_conn_close_clean(c, "idle timeout");
    }
}

const struct mt_proto_ops px_relay_ops = {
    .name = "relay",
    .proto_size = sizeof(struct px_conn),
    .on_accept = on_accept,
    .on_tls_done = on_tls_done,
    .on_tls_error = on_tls_error,
    .on_io = on_io,
    .on_timeout = on_timeout,
    .on_close = on_close,
};
