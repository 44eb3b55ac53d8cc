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
#include "pipe.h"
#include "proxy.h"
#include "proxyv2.h"

#define PX_RAW 16384 /* --forward-identity http-headers: unfiltered client bytes */

enum px_sub { PX_IDLE = 0, PX_SNIFF, PX_CONNECT, PX_RELAY };

/* The relay's state of one connection (the engine's proto area). */
struct px_conn {
    enum px_sub sub;
    struct px_pipe pipe; /* the bytes in flight both ways (pipe.c) */
    struct px_h1 *h1;    /* --forward-identity http-headers: request filter (down->up) */
    char *inject;        /* the identity headers for each request */
    char *raw;           /* unfiltered client bytes waiting for the filter */
    size_t raw_off, raw_len;
    /* Text for the logs, allocated only when there is some: an idle connection keeps
     * ~100 bytes here instead of a kilobyte of fixed buffers. */
    char *who;            /* peer identity (SPIFFE ID or subject) */
    char *serial;         /* peer certificate serial */
    const char *decision; /* "allow" / "deny" (static) */
    const char *why;      /* closing reason: static, or why_owned */
    char *why_owned;
    unsigned char first[8]; /* PX_SNIFF: the first bytes of a connection that is not TLS */
    size_t first_len;
};

static inline struct px_conn *P(struct mt_conn *c)
{
    return mt_conn_proto(c);
}

static inline const struct px_snap *S(const struct mt_conn *c)
{
    return (const struct px_snap *)c->snap;
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
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "close", MESHTLS_LF_U("conn", c->id),
                      MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("id", p->who),
                      MESHTLS_LF_S("serial", p->serial), MESHTLS_LF_S("decision", p->decision),
                      MESHTLS_LF_U("bytes_up", p->pipe.bytes[0]),
                      MESHTLS_LF_U("bytes_down", p->pipe.bytes[1]),
                      MESHTLS_LF_D("duration_ms", (double)dur / 1000.0),
                      MESHTLS_LF_S("reason", p->why ? p->why : "done"));
    px_count(PX_C_BYTES_UP, mt_conn_shard(c), p->pipe.bytes[0]);
    px_count(PX_C_BYTES_DOWN, mt_conn_shard(c), p->pipe.bytes[1]);
    px_pipe_release(c, &p->pipe);
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
        px_count(PX_C_BACKEND_ERR, mt_conn_shard(c), 1);
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
    size_t n = px_pp2_build((unsigned char *)p->pipe.buf[0], MT_BUF, &c->peer_sa.sa,
                            (struct sockaddr *)&local, &t);
    meshtls_identity_free(id);
    p->pipe.off[0] = 0;
    p->pipe.len[0] = n;
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
        if (!(p->pipe.buf[0] = mt_buf_get(c))) {
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
    px_metrics_handshake((double)(mt_now_us() - c->start_us) / 1e6, mt_conn_shard(c));
    struct meshtls_identity *id = NULL;
    if (meshtls_tls_peer_identity(t->ssl, &id, NULL) == 0) {
        p->who = strdup(id->spiffe_id ? id->spiffe_id : id->subject ? id->subject : "-");
        p->serial = id->serial ? strdup(id->serial) : NULL;
    }
    if (meshtls_log_enabled(MESHTLS_LOG_DEBUG))
        MESHTLS_LOG_EVENT(MESHTLS_LOG_DEBUG, "handshake", MESHTLS_LF_U("conn", c->id),
                          MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("id", p->who),
                          MESHTLS_LF_S("version", SSL_get_version(t->ssl)),
                          MESHTLS_LF_S("cipher", SSL_get_cipher_name(t->ssl)),
                          MESHTLS_LF_B("resumed", SSL_session_reused(t->ssl)));
    if (s->mode == PX_MODE_SERVER) {
        struct meshtls_decision d;
        /* the policy of the snapshot this connection started with (a reload may have
         * published another since); no policy: denied (fail closed) */
        meshtls_policy_check(s->policy, id, s->service, &d);
        p->decision = d.allow ? "allow" : "deny";
        MESHTLS_LOG_EVENT(d.allow ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN, "audit",
                          MESHTLS_LF_S("action", "policy"), MESHTLS_LF_S("decision", p->decision),
                          MESHTLS_LF_U("conn", c->id), MESHTLS_LF_S("client", c->peer_addr),
                          MESHTLS_LF_S("id", p->who), MESHTLS_LF_S("serial", p->serial),
                          MESHTLS_LF_S("service", s->service), MESHTLS_LF_S("rule", d.rule),
                          MESHTLS_LF_S("reason", d.reason));
        meshtls_identity_free(id);
        if (!d.allow) {
            px_count(PX_C_DENY, mt_conn_shard(c), 1);
            mt_end_shut_write(t); /* close_notify, then close: the client reads EOF */
            mt_conn_close(c, "denied by policy");
            return;
        }
        px_count(PX_C_ALLOW, mt_conn_shard(c), 1);
        start_connect(c); /* target connect starts as soon as policy allows */
        return;
    }
    meshtls_identity_free(id);
    start_relay(c);
}

static void on_tls_error(struct mt_conn *c, struct mt_end *t, int timeout)
{
    struct px_conn *p = P(c);
    if (timeout) {
        px_count_hs_error(PX_HSE_TIMEOUT, mt_conn_shard(c));
        p->why = "TLS handshake timeout";
        return;
    }
    char msg[MESHTLS_ERR_MSG_MAX];
    px_handshake_failed(c, t, S(c) && S(c)->tls_min_12, &p->who, &p->serial, msg, sizeof(msg));
    set_why(p, "%s", msg);
}

/* ---- not TLS on the TLS port ----------------------------------------------------- */

/* PostgreSQL's SSLRequest and GSSENCRequest: length 8, then 1234/5679 and 1234/5680. */
static const unsigned char pg_sslrequest[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
static const unsigned char pg_gssrequest[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};

#define TLS_REQUIRED_BODY                                                                          \
    "This port requires TLS with a client certificate (mutual TLS): connect with https:// and "    \
    "present a certificate from the trusted CA.\n"

/* Not TLS and not PostgreSQL: count it, answer an HTTP request in HTTP as nginx does, close. */
static void refuse_plaintext(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    px_count_hs_error(PX_HSE_PLAINTEXT, mt_conn_shard(c));
    int http = p->first_len >= 2 && p->first[0] >= 'A' && p->first[0] <= 'Z';
    for (size_t i = 1; http && i < p->first_len && p->first[i] != ' '; i++)
        http = p->first[i] >= 'A' && p->first[i] <= 'Z';
    if (http) {
        char resp[512];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         sizeof(TLS_REQUIRED_BODY) - 1, TLS_REQUIRED_BODY);
        /* read what the client sent first (bounded), so closing does not reset the
         * connection under the answer */
        char junk[4096];
        for (int i = 0; i < 16 && mt_end_read(&c->down, junk, sizeof(junk)) > 0; i++)
            ;
        if (n > 0)
            (void)mt_end_write(&c->down, resp, (size_t)n);
        mt_end_shut_write(&c->down);
    }
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "refused", MESHTLS_LF_U("conn", c->id),
                      MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("reason", "plaintext"),
                      MESHTLS_LF_S("error", http ? "an HTTP request on the TLS port: answered "
                                                   "HTTP 400 (TLS required)"
                                                 : "bytes that start no TLS handshake"));
    mt_conn_close(c, http ? "plaintext HTTP on the TLS port" : "plaintext on the TLS port");
}

static void step_sniff(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    if (p->first_len == 0 || p->first[0] == 0) {
        /* maybe PostgreSQL: exactly 8 bytes, no more (the ClientHello follows our 'S') */
        while (p->first_len < 8 && c->down.rd_ready) {
            ssize_t n = mt_end_read(&c->down, (char *)p->first + p->first_len, 8 - p->first_len);
            if (n == 0 || n == -2) {
                mt_conn_close(c, "closed before TLS");
                return;
            }
            if (n < 0)
                break;
            p->first_len += (size_t)n;
            if (p->first[0] != 0)
                break; /* not PostgreSQL */
        }
        if (p->first_len == 0 || (p->first[0] == 0 && p->first_len < 8))
            return; /* wait for more */
    }
    if (p->first_len == 8 && !memcmp(p->first, pg_gssrequest, 8)) {
        /* no GSSAPI encryption here: libpq then asks for TLS */
        p->first_len = 0;
        if (mt_end_write(&c->down, "N", 1) != 1)
            mt_conn_close(c, "client closed after GSSENCRequest");
        return;
    }
    if (p->first_len == 8 && !memcmp(p->first, pg_sslrequest, 8)) {
        SSL *ssl = SSL_new(c->snap->ctx);
        if (!ssl || mt_end_write(&c->down, "S", 1) != 1) {
            SSL_free(ssl);
            mt_conn_close(c, "cannot answer PostgreSQL's SSLRequest");
            return;
        }
        p->sub = PX_IDLE;
        mt_conn_start_tls(c, &c->down, ssl, 0, S(c)->handshake_timeout_ms);
        return;
    }
    refuse_plaintext(c);
}

/* The engine saw a first byte that cannot start TLS (it peeked: nothing is consumed). */
static void on_plaintext(struct mt_conn *c)
{
    P(c)->sub = PX_SNIFF;
    mt_conn_set_timeout(c, S(c)->handshake_timeout_ms);
    if (c->down.rd_ready) {
        char b;
        if (mt_end_read(&c->down, &b, 1) == 1) {
            P(c)->first[0] = (unsigned char)b;
            P(c)->first_len = 1;
        }
    }
    /* for HTTP, a few more bytes tell the method */
    while (P(c)->first[0] != 0 && P(c)->first_len < 8 && c->down.rd_ready) {
        ssize_t n =
            mt_end_read(&c->down, (char *)P(c)->first + P(c)->first_len, 8 - P(c)->first_len);
        if (n <= 0)
            break;
        P(c)->first_len += (size_t)n;
    }
    step_sniff(c);
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
        px_count(PX_C_BACKEND_ERR, mt_conn_shard(c), 1);
        MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "target", MESHTLS_LF_U("conn", c->id),
                          MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("id", p->who),
                          MESHTLS_LF_S("error", p->why));
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

/* What a TLS alert from the peer means for the one who reads our log. */
static const char *alert_meaning(int alert)
{
    switch (alert) {
    case SSL_AD_CERTIFICATE_REVOKED:
        return "our certificate is revoked: issue a new one (meshtls ca rotate)";
    case SSL_AD_CERTIFICATE_EXPIRED: return "our certificate has expired: renew it";
    case SSL_AD_UNKNOWN_CA:
        return "the peer does not trust the CA that issued our certificate: check its --cacert";
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
        return "the peer refused our certificate (wrong key usage or a broken chain?)";
    case SSL_AD_ACCESS_DENIED: return "the peer's policy denies our identity";
    case TLS13_AD_CERTIFICATE_REQUIRED:
        return "the peer requires a client certificate and got none";
    case SSL_AD_PROTOCOL_VERSION: return "no TLS version in common";
    default: return "the peer ended the connection";
    }
}

/* Why reading or writing `e` failed, in words: a peer's TLS alert when there was one. */
static void why_end_failed(struct mt_conn *c, struct mt_end *e, const char *fallback)
{
    struct px_conn *p = P(c);
    unsigned long err = e->last_err;
    int reason = err && ERR_GET_LIB(err) == ERR_LIB_SSL ? ERR_GET_REASON(err) : 0;
    if (e->ssl && reason >= SSL_AD_REASON_OFFSET) {
        int alert = reason - SSL_AD_REASON_OFFSET;
        set_why(p, "the %s sent TLS alert '%s': %s", e->is_down ? "client" : "server",
                SSL_alert_desc_string_long(alert), alert_meaning(alert));
        MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "refused", MESHTLS_LF_U("conn", c->id),
                          MESHTLS_LF_S("client", c->peer_addr),
                          MESHTLS_LF_S("reason", "peer_alert"), MESHTLS_LF_S("error", p->why));
        return;
    }
    set_why(p, "%s", fallback);
}

/* --forward-identity http-headers: the pipe's direction 0 goes raw bytes -> the HTTP/1.1
 * filter -> buf[0].  @return 0, or -1 if the connection was closed. */
static int h1_fill(struct mt_conn *c, struct px_pipe *pp, void *arg, int *progress)
{
    struct px_conn *p = arg;
    struct mt_end *src = &c->down;
    if (p->raw_len == 0 && !src->rd_eof && src->rd_ready) {
        ssize_t n = mt_end_read(src, p->raw, PX_RAW);
        if (n > 0) {
            p->raw_off = 0;
            p->raw_len = (size_t)n;
            pp->bytes[0] += (unsigned long long)n;
            *progress = 1;
        } else if (n == 0) {
            src->rd_eof = 1;
            *progress = 1;
        } else if (n == -2) {
            mt_conn_close(c, "client connection error");
            return -1;
        }
    }
    if (p->raw_len || p->h1->pending) {
        if (!pp->buf[0] && !(pp->buf[0] = mt_buf_get(c))) {
            mt_conn_close(c, "out of memory");
            return -1;
        }
        size_t used = 0, made = 0;
        int hr = px_h1_feed(p->h1, p->raw + p->raw_off, p->raw_len, &used, pp->buf[0], MT_BUF,
                            &made, p->inject);
        p->raw_off += used;
        p->raw_len -= used;
        pp->off[0] = 0;
        pp->len[0] = made;
        if (hr != 0) {
            mt_conn_close(c, hr == PX_H1_E_TOO_BIG ? "HTTP request head too large (16 KiB)"
                                                   : "malformed HTTP/1.1 request");
            return -1;
        }
        if (used || made)
            *progress = 1;
    }
    return 0;
}

/* The filter still holds client bytes: the half-close towards the target waits. */
static int h1_holding(void *arg)
{
    struct px_conn *p = arg;
    return p->raw_len || p->h1->pending;
}

/* A source's end of stream: in client mode, a server that closes before a byte. */
static void relay_eof(struct mt_conn *c, struct px_pipe *pp, int dir, void *arg)
{
    struct px_conn *p = arg;
    if (dir == 1 && c->up.ssl && pp->bytes[1] == 0 && !p->why && S(c)->mode == PX_MODE_CLIENT)
        /* TLS 1.3: a server that denies by policy completes the handshake, then closes
         * without a byte */
        p->why = "the server closed without sending anything: its policy may deny our "
                 "identity (see its audit log), or the service behind it closed";
}

static void relay_fail(struct mt_conn *c, struct mt_end *e, const char *fallback, void *arg)
{
    (void)arg;
    why_end_failed(c, e, fallback);
}

/* Copy bytes both ways (pipe.c).  @return 1 if it stopped early (call again). */
static int step_relay(struct mt_conn *c)
{
    struct px_conn *p = P(c);
    const struct px_pipe_hooks h = {p->h1 ? h1_fill : NULL, h1_holding, relay_eof, relay_fail, p};
    return px_pipe_step(c, &p->pipe, &h, S(c)->idle_timeout_ms);
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
    case PX_SNIFF: step_sniff(c); return 0;
    case PX_IDLE: return 0;
    }
    return 0;
}

static void on_timeout(struct mt_conn *c)
{
    if (P(c)->sub == PX_SNIFF) {
        px_count_hs_error(PX_HSE_TIMEOUT, mt_conn_shard(c));
        mt_conn_close(c, "TLS handshake timeout");
    } else if (P(c)->sub == PX_CONNECT) {
        px_count(PX_C_BACKEND_ERR, mt_conn_shard(c), 1);
        mt_conn_close_clean(c, "timeout connecting to the target");
    } else {
        mt_conn_close_clean(c, "idle timeout");
    }
}

const struct mt_proto_ops px_relay_ops = {
    .name = "relay",
    .proto_size = sizeof(struct px_conn),
    .on_accept = on_accept,
    .on_plaintext = on_plaintext,
    .on_tls_done = on_tls_done,
    .on_tls_error = on_tls_error,
    .on_io = on_io,
    .on_timeout = on_timeout,
    .on_close = on_close,
};
