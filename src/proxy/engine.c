/*
 * engine.c - the proxy's event loops and connection state machine.
 *
 * Each worker thread owns an epoll set.  All workers watch the one
 * listening socket with EPOLLEXCLUSIVE, so one of them wakes per new
 * connection and accepts a batch.  Connection sockets are registered once,
 * edge-triggered for both directions (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET):
 * no epoll_ctl is needed as the connection changes state.  On any event
 * the connection's step function makes all the progress it can; if it
 * stops early for fairness it goes on the worker's ready list, so an edge
 * is never lost.
 *
 * Each end remembers what the kernel last told it (rd_ready, wr_ready):
 * an event sets the flag, and a read or write that proves the socket empty
 * or full clears it (EAGAIN, OpenSSL's WANT_READ/WANT_WRITE, or a short
 * read/write on a plain TCP socket).  The relay only calls read/write on an
 * end whose flag is set, so a request costs one read per socket instead of
 * a read plus EAGAIN probes on both sides.  A TLS read that needs to write
 * (or a write that needs to read) clears the other flag and keeps its own,
 * so the next event of either kind retries it.
 *
 * States (struct px_conn.state):
 *   PX_HANDSHAKE   TLS handshake on the TLS end (server: client side;
 *                  client mode: target side, after PX_CONNECT)
 *   PX_CONNECT     non-blocking connect() to the target in progress
 *   PX_RELAY       copying bytes both ways, with half-close
 *   PX_CLOSED      waiting to be freed at the end of the loop iteration
 *
 * Closing is deferred: a handler marks the connection closed and puts it on
 * the worker's free list; it is freed after the current batch of events,
 * so a later event of the same batch never touches freed memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "meshtls/log.h"
#include "meshtls/x509.h"
#include "proxy.h"
#include "http1.h"
#include "proxyv2.h"

#define PX_BUF 65536           /* per direction, only while bytes are in flight */
#define PX_RAW 16384           /* --forward-identity http-headers: unfiltered client bytes */
#define PX_STEP_MAX 32         /* read/write rounds per event before yielding */
#define PX_NFILES 9            /* files watched for a reload */
#define PX_ACCEPT_MAX 64       /* accepts per wake-up */
#define PX_ACCEPT_PAUSE_MS 100 /* out of descriptors: listener left alone this long */

enum px_state { PX_HANDSHAKE = 1, PX_CONNECT, PX_RELAY, PX_CLOSED };

struct px_conn;

/* One side of a connection: `down` is the client, `up` the target. */
struct px_end {
    struct px_conn *c;
    int fd;
    SSL *ssl;         /* the TLS end has one */
    int rd_eof;       /* no more bytes will come from this end */
    int wr_shut;      /* we have shut down writing towards this end */
    int shut_pending; /* close_notify queued in OpenSSL, not yet on the wire */
    int is_down;
    int rd_ready; /* a read may make progress: set by events, cleared by EAGAIN/short read */
    int wr_ready; /* a write may make progress: set by events, cleared by EAGAIN/short write */
    int drained;  /* TLS end: OpenSSL's last read(2) since the last event came back short */
    int rdhup;    /* the peer's FIN (or an error) arrived: read until EOF, no more edges come */
};

struct px_conn {
    struct px_end down, up;
    struct px_end *hs; /* the end whose TLS handshake runs in PX_HANDSHAKE */
    enum px_state state;
    char *buf[2];     /* [0] down->up, [1] up->down; PX_BUF each */
    struct px_h1 *h1; /* --forward-identity http-headers: request filter (down->up) */
    char *inject;     /* the identity headers for each request */
    char *raw;        /* unfiltered client bytes waiting for the filter */
    size_t raw_off, raw_len;
    size_t off[2], len[2];
    unsigned long long bytes[2];
    int64_t start_us, deadline_ms;
    int on_ready;
    struct px_conn *next, *prev; /* worker's list of live connections */
    struct px_conn *ready_next;
    struct px_conn *free_next;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer_sa; /* client address, for PROXY v2 */
    char peer_addr[64];
    /* Text for the logs, allocated only when there is some: an idle connection keeps
     * ~100 bytes here instead of a kilobyte of fixed buffers. */
    char *who;            /* peer identity (SPIFFE ID or subject) */
    char *serial;         /* peer certificate serial */
    const char *decision; /* "allow" / "deny" (static) */
    const char *why;      /* closing reason: static, or why_owned */
    char *why_owned;
};

#define PX_POOL_MAX 64 /* spare buffers kept per worker (4 MiB) */

struct px_worker {
    int id;
    char *pool[PX_POOL_MAX]; /* free PX_BUF buffers: no malloc per read, none held when idle */
    int pool_n;
    int epfd;
    pthread_t th;
    struct px_conn *conns;   /* live */
    struct px_conn *ready;   /* to step again without an event */
    struct px_conn *freeing; /* closed, free after the batch */
    int listening;           /* listener in our epoll set */
    int64_t paused_until;    /* out of descriptors: leave the listener alone until then */
    int64_t now_ms;          /* monotonic time of the last epoll_wait return */
};

static char *pool_get(struct px_worker *w)
{
    return w->pool_n ? w->pool[--w->pool_n] : malloc(PX_BUF);
}

static void pool_put(struct px_worker *w, char *b)
{
    if (!b)
        return;
    if (w->pool_n < PX_POOL_MAX)
        w->pool[w->pool_n++] = b;
    else
        free(b);
}

static const struct px_config *cfg;
static struct px_tls *g_tls;
static struct px_tls *g_target_tls; /* --target-tls: client context towards the target */
static int listen_fd = -1;
static struct sockaddr_storage target_addr;
static socklen_t target_len;
static atomic_int stopping; /* stop accepting, drain */
static atomic_int max_logged;
static atomic_int fd_logged;         /* out of descriptors: 0 no, 1 yes, 2 yes and logged */
static _Atomic int64_t fd_logged_ms; /* when it was last logged */
static _Atomic int64_t max_logged_ms;
static struct px_worker *workers;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int px_resolve(const char *hostport, int passive, struct sockaddr_storage *out, socklen_t *len,
               struct meshtls_err *err)
{
    char host[256];
    const char *port, *h = hostport;
    size_t hl;
    if (!hostport || !*hostport)
        return meshtls_err_set(err, MESHTLS_EINVAL, "missing address (expected HOST:PORT)");
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || rb[1] != ':')
            return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected [IPv6]:PORT",
                                   hostport);
        hl = (size_t)(rb - h - 1);
        h++;
        port = rb + 2;
    } else {
        const char *colon = strrchr(h, ':');
        if (!colon)
            return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected HOST:PORT",
                                   hostport);
        hl = (size_t)(colon - h);
        port = colon + 1;
    }
    if (hl >= sizeof(host) || !*port)
        return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected HOST:PORT", hostport);
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0},
                    *res = NULL;
    int g = getaddrinfo(hl ? host : NULL, port, &hints, &res);
    if (g != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': %s", hostport, gai_strerror(g));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void addr_str(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        port = ntohs(s->sin_port);
        snprintf(buf, cap, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        port = ntohs(s->sin6_port);
        snprintf(buf, cap, "[%s]:%d", ip, port);
    } else {
        snprintf(buf, cap, "?");
    }
}

/* An ALPN list in wire format (length-prefixed).  Each context built by px_tls_build gets
 * its own copy, read by alpn_select through the callback argument and freed with the
 * context (ex_data free callback), so a reload never rewrites a list that a worker's
 * handshake may be reading: the old context and its list live while a connection uses it. */
struct alpn_wire {
    unsigned len;
    unsigned char b[256];
};

static int alpn_idx = -1;
static pthread_once_t alpn_once = PTHREAD_ONCE_INIT;

static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void alpn_index_init(void)
{
    alpn_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
}

static int alpn_parse(const char *list, struct alpn_wire *w, struct meshtls_err *err)
{
    w->len = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n > 64 || w->len + 1 + n > sizeof(w->b))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "--alpn '%s': expected a comma-separated list such as "
                                   "h2,http/1.1",
                                   list);
        w->b[w->len++] = (unsigned char)n;
        memcpy(w->b + w->len, p, n);
        w->len += (unsigned)n;
        p += n + (comma ? 1 : 0);
    }
    return 0;
}

/* Server: pick the first of the client's protocols that we also list (`arg`: this
 * context's struct alpn_wire). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct alpn_wire *w = arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, w->b, w->len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no overlap: continue without ALPN */
}

/* Give `ctx` the ALPN list `list`: a server selects from it, a client offers it. */
static int alpn_attach(SSL_CTX *ctx, const char *list, int server, struct meshtls_err *err)
{
    if (pthread_once(&alpn_once, alpn_index_init) != 0 || alpn_idx < 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "--alpn: no OpenSSL ex_data index left");
    struct alpn_wire *w = calloc(1, sizeof(*w));
    if (!w)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    int rc = alpn_parse(list, w, err);
    if (rc == 0 && SSL_CTX_set_ex_data(ctx, alpn_idx, w) != 1)
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    if (rc) {
        free(w);
        return rc;
    }
    /* the context owns `w` from here (alpn_free) */
    if (server)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, w);
    else if (SSL_CTX_set_alpn_protos(ctx, w->b, w->len) != 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "--alpn: OpenSSL refused the list");
    return 0;
}

/* The policy a server context decides with, owned by the context (ex_data, freed with it):
 * a reload builds a new context with the re-read policy file, and connections keep the
 * context, hence the policy, they started with. */
static int policy_idx = -1;
static pthread_once_t policy_once = PTHREAD_ONCE_INIT;

static void policy_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    meshtls_policy_free(ptr);
}

static void policy_index_init(void)
{
    policy_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, policy_free_cb);
}

int px_policy_build(const struct px_config *c, struct meshtls_policy **out, struct meshtls_err *err)
{
    struct meshtls_policy *p = NULL;
    int rc = meshtls_policy_new(&p);
    if (rc)
        return meshtls_err_set(err, rc, "out of memory building the policy");
    if (c->policy_file && (rc = meshtls_policy_load_file(p, c->policy_file, err)) != 0)
        goto fail;
    if (c->policy_file && c->service && !meshtls_policy_names_service(p, c->service)) {
        rc = meshtls_err_set(err, MESHTLS_EINVAL,
                             "--service %s: the policy file %s has no rules for it under "
                             "'services:'; add a '%s:' section there, or fix the name",
                             c->service, c->policy_file, c->service);
        goto fail;
    }
    if ((rc = meshtls_policy_append(p, c->policy, err)) != 0)
        goto fail;
    *out = p;
    return 0;
fail:
    meshtls_policy_free(p);
    return rc;
}

/* Give the server context `ctx` its whole policy (see policy_idx). */
static int policy_attach(SSL_CTX *ctx, const struct px_config *c, struct meshtls_err *err)
{
    if (pthread_once(&policy_once, policy_index_init) != 0 || policy_idx < 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "no OpenSSL ex_data index left");
    struct meshtls_policy *p = NULL;
    int rc = px_policy_build(c, &p, err);
    if (rc)
        return rc;
    if (SSL_CTX_set_ex_data(ctx, policy_idx, p) != 1) {
        meshtls_policy_free(p);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    return 0; /* the context owns `p` */
}

int px_tls_build(const struct px_config *c, SSL_CTX **out, int64_t *not_after,
                 struct meshtls_err *err)
{
    SSL_CTX *ctx = NULL;
    int rc = c->mode == PX_MODE_SERVER ? meshtls_tls_server_ctx_new(&c->tls, &ctx, err)
                                       : meshtls_tls_client_ctx_new(&c->tls, &ctx, err);
    if (rc)
        return rc;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer closing TCP without close_notify ends its stream like a FIN would; without this
     * OpenSSL 3 reports a fatal error and evicts the session from the cache. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Read whole socket buffers, not a 5-byte record header then its body: one read(2)
     * per burst instead of two per record (measured: 3.2 -> ~1.2 reads per request). The
     * relay loop reads until WANT_READ, so nothing buffered is left behind. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* ... and up to four full records per read(2) in bulk transfers (the buffer exists only
     * while a record is incomplete or unread: SSL_MODE_RELEASE_BUFFERS frees it). */
    SSL_CTX_set_default_read_buffer_len(ctx, PX_BUF + 4 * 256);
    if ((c->alpn && (rc = alpn_attach(ctx, c->alpn, c->mode == PX_MODE_SERVER, err)) != 0) ||
        (c->mode == PX_MODE_SERVER && (rc = policy_attach(ctx, c, err)) != 0)) {
        SSL_CTX_free(ctx);
        return rc;
    }
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    struct meshtls_identity *id = NULL;
    *not_after = 0;
    if (leaf && meshtls_identity_from_x509(leaf, &id, NULL) == 0) {
        *not_after = id->not_after;
        meshtls_identity_free(id);
    }
    *out = ctx;
    return 0;
}

int px_target_tls_build(const struct px_config *c, SSL_CTX **out, struct meshtls_err *err)
{
    int rc = meshtls_tls_client_ctx_new(&c->target_opts, out, err);
    if (rc == 0) {
        SSL_CTX_set_mode(*out, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(*out, SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    return rc;
}

/* ---- connection I/O ---------------------------------------------------- */

/* SSL_get_error() needs an empty error queue.  Every failure path below empties it, so it
 * is almost always empty already: peeking is far cheaper than clearing all 16 slots. */
static inline void clear_err(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* Called by the socket BIO around each of OpenSSL's read(2) calls on a TLS end: a read
 * that returns fewer bytes than OpenSSL asked for (read-ahead asks for a whole buffer)
 * emptied the socket's receive queue. */
static long rbio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                    size_t *processed)
{
    (void)argp, (void)argi, (void)argl;
    if (oper == BIO_CB_READ) {
        struct px_end *e = (struct px_end *)BIO_get_callback_arg(b);
        if (e->drained && !e->rdhup) {
            /* The socket was empty at the last read and no event has come since: answer
             * "retry" (WANT_READ) without a read(2) that would only return EAGAIN. */
            BIO_clear_retry_flags(b);
            BIO_set_retry_read(b);
            return -1;
        }
    } else if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        struct px_end *e = (struct px_end *)BIO_get_callback_arg(b);
        e->drained = ret <= 0 || (processed && *processed < len);
    }
    return ret;
}

/* Give `e` the TLS connection `ssl` over its socket.  Reading and writing get separate
 * socket BIOs so that only reads (not OpenSSL's many write-side BIO_ctrl calls) pass
 * through rbio_cb.  @return 0, or -1 on failure (`ssl` then belongs to `e` anyway). */
static int tls_attach(struct px_end *e, SSL *ssl)
{
    if (!ssl)
        return -1;
    e->ssl = ssl;
    BIO *rb = BIO_new_socket(e->fd, BIO_NOCLOSE), *wb = BIO_new_socket(e->fd, BIO_NOCLOSE);
    if (!rb || !wb) {
        BIO_free(rb);
        BIO_free(wb);
        return -1;
    }
    BIO_set_callback_arg(rb, (char *)e);
    BIO_set_callback_ex(rb, rbio_cb);
    SSL_set_bio(ssl, rb, wb); /* the SSL owns both from here */
    return 0;
}

/* @return >0 bytes, 0 EOF, -1 would block, -2 error. */
static ssize_t end_read(struct px_end *e, char *buf, size_t n)
{
    if (!e->ssl) {
        ssize_t r = read(e->fd, buf, n);
        if (r > 0) {
            /* a short read on a stream socket emptied its queue: the next byte is an edge.
             * Not so after the FIN: its edge has passed, and the next read returns 0. */
            if ((size_t)r < n && !e->rdhup)
                e->rd_ready = 0;
            return r;
        }
        if (r == 0)
            return 0;
        if (errno == EAGAIN)
            e->rd_ready = 0;
        return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
    }
    size_t got = 0;
    clear_err();
    errno = 0;
    if (SSL_read_ex(e->ssl, buf, n, &got) == 1) {
        /* the socket came up short and OpenSSL holds nothing more: wait for the next edge
         * rather than probe with a read(2) that would return EAGAIN */
        if (e->drained && !e->rdhup && !SSL_has_pending(e->ssl))
            e->rd_ready = 0;
        return (ssize_t)got;
    }
    switch (SSL_get_error(e->ssl, 0)) {
    case SSL_ERROR_WANT_READ: e->rd_ready = 0; return -1;
    case SSL_ERROR_WANT_WRITE: e->wr_ready = 0; return -1; /* retried on EPOLLOUT */
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && errno == 0)
            return 0; /* EOF without close_notify: treat as end of stream */
        /* fall through */
    default: ERR_clear_error(); return -2;
    }
}

/* @return >0 bytes, -1 would block, -2 error. */
static ssize_t end_write(struct px_end *e, const char *buf, size_t n)
{
    if (!e->ssl) {
        ssize_t w = send(e->fd, buf, n, MSG_NOSIGNAL);
        if (w >= 0) {
            if ((size_t)w < n)
                e->wr_ready = 0; /* the send buffer is full: wait for EPOLLOUT */
            return w;
        }
        if (errno == EAGAIN)
            e->wr_ready = 0;
        return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
    }
    size_t put = 0;
    clear_err();
    if (SSL_write_ex(e->ssl, buf, n, &put) == 1)
        return (ssize_t)put;
    int se = SSL_get_error(e->ssl, 0);
    if (se == SSL_ERROR_WANT_WRITE) {
        e->wr_ready = 0;
        return -1;
    }
    if (se == SSL_ERROR_WANT_READ) {
        e->rd_ready = 0; /* retried on EPOLLIN */
        return -1;
    }
    ERR_clear_error();
    return -2;
}

static void end_shut_write(struct px_end *e)
{
    if (e->ssl) {
        clear_err();
        int r = SSL_shutdown(e->ssl); /* sends close_notify; reading stays possible */
        /* a full socket buffer: flush it from the relay loop when the socket drains */
        e->shut_pending = r < 0 && SSL_get_error(e->ssl, r) == SSL_ERROR_WANT_WRITE;
        if (e->shut_pending)
            e->wr_ready = 0;
        ERR_clear_error();
    } else {
        shutdown(e->fd, SHUT_WR);
    }
    e->wr_shut = 1;
}

/* ---- connection lifecycle ---------------------------------------------- */

/* The closing reason, formatted (kept to 300 bytes).  Out of memory leaves a fixed one. */
__attribute__((format(printf, 2, 3))) static void set_why(struct px_conn *c, const char *fmt, ...)
{
    free(c->why_owned);
    c->why_owned = malloc(300);
    if (c->why_owned) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why_owned, 300, fmt, ap);
        va_end(ap);
    }
    c->why = c->why_owned ? c->why_owned : "error (out of memory formatting the reason)";
}

static void conn_close(struct px_worker *w, struct px_conn *c, const char *why)
{
    if (c->state == PX_CLOSED)
        return;
    if (why && !c->why)
        c->why = why;
    int64_t dur = now_us() - c->start_us;
    meshtls_log(MESHTLS_LOG_INFO,
                "close client=%s id=%s serial=%s decision=%s bytes_up=%llu bytes_down=%llu "
                "duration_ms=%.1f reason=\"%s\"",
                c->peer_addr, c->who ? c->who : "-", c->serial ? c->serial : "-",
                c->decision ? c->decision : "-", c->bytes[0], c->bytes[1], (double)dur / 1000.0,
                c->why ? c->why : "done");
    atomic_fetch_add(&px_metrics.bytes_up, c->bytes[0]);
    atomic_fetch_add(&px_metrics.bytes_down, c->bytes[1]);
    c->state = PX_CLOSED;
    /* unlink from live list */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->free_next = w->freeing;
    w->freeing = c;
}

/* Close a connection whose TLS peer did nothing wrong (idle timeout, the target failed):
 * send close_notify first, so the client reads a clean end of stream and OpenSSL keeps its
 * session resumable (an SSL freed without close_notify has its session dropped). */
static void conn_close_clean(struct px_worker *w, struct px_conn *c, const char *why)
{
    struct px_end *ends[2] = {&c->down, &c->up};
    for (int i = 0; i < 2; i++)
        if (ends[i]->ssl && !ends[i]->wr_shut && SSL_is_init_finished(ends[i]->ssl))
            end_shut_write(ends[i]);
    conn_close(w, c, why);
}

static void conn_free(struct px_worker *w, struct px_conn *c)
{
    if (c->down.ssl)
        SSL_free(c->down.ssl);
    if (c->up.ssl)
        SSL_free(c->up.ssl);
    if (c->down.fd >= 0)
        close(c->down.fd); /* also leaves the epoll set */
    if (c->up.fd >= 0)
        close(c->up.fd);
    pool_put(w, c->buf[0]);
    pool_put(w, c->buf[1]);
    free(c->h1);
    free(c->inject);
    free(c->raw);
    free(c->who);
    free(c->serial);
    free(c->why_owned);
    free(c);
    long long left = atomic_fetch_sub(&px_metrics.active, 1) - 1;
    if (cfg && left < cfg->max_conns)
        atomic_store(&max_logged, 0);
}

static int watch(struct px_worker *w, struct px_end *e)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = e};
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->fd, &ev);
}

/* Create an SSL from the current context of `h`; `client` for outgoing TLS. */
static SSL *new_ssl(struct px_tls *h, int client)
{
    SSL *ssl = NULL;
    pthread_mutex_lock(&h->mu);
    if (client)
        meshtls_tls_client_ssl_new(h->ctx, &ssl, NULL);
    else
        ssl = SSL_new(h->ctx); /* takes its own reference on the context */
    pthread_mutex_unlock(&h->mu);
    return ssl;
}

static void start_connect(struct px_worker *w, struct px_conn *c)
{
    int fd = socket(target_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_close_clean(w, c, "cannot create a socket for the target");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->up.fd = fd;
    if (connect(fd, (struct sockaddr *)&target_addr, target_len) != 0 && errno != EINPROGRESS) {
        set_why(c, "cannot connect to target %s: %s", cfg->target, strerror(errno));
        atomic_fetch_add(&px_metrics.backend_errors, 1);
        conn_close_clean(w, c, NULL);
        return;
    }
    if (watch(w, &c->up) != 0) {
        conn_close(w, c, "epoll_ctl failed");
        return;
    }
    c->state = PX_CONNECT;
    c->deadline_ms = w->now_ms + cfg->connect_timeout_ms;
}

/* Queue a PROXY v2 header announcing the client and its identity. */
static void queue_pp2(struct px_conn *c)
{
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
    size_t n = px_pp2_build((unsigned char *)c->buf[0], PX_BUF, &c->peer_sa.sa,
                            (struct sockaddr *)&local, &t);
    meshtls_identity_free(id);
    c->off[0] = 0;
    c->len[0] = n;
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
static int build_inject(struct px_conn *c)
{
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
    c->inject = malloc(4096);
    if (c->inject)
        snprintf(c->inject, 4096,
                 "X-Client-Cert-Subject: %s\r\nX-Client-Cert-Serial: %s\r\n"
                 "X-Forwarded-Client-Cert: Hash=%s;Subject=\"%s\"%s%s\r\n",
                 subj, id->serial, hash, qsubj, uri[0] ? ";URI=" : "", uri);
    meshtls_identity_free(id);
    return c->inject ? 0 : -1;
}

static int start_relay(struct px_worker *w, struct px_conn *c)
{
    if (cfg->mode == PX_MODE_SERVER && cfg->forward_http) {
        c->h1 = calloc(1, sizeof(*c->h1));
        c->raw = malloc(PX_RAW);
        if (!c->h1 || !c->raw || build_inject(c) != 0) {
            conn_close(w, c, "out of memory");
            return -1;
        }
    }
    if (cfg->mode == PX_MODE_SERVER && cfg->forward_pp2) {
        if (!(c->buf[0] = pool_get(w))) {
            conn_close(w, c, "out of memory");
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
    c->state = PX_RELAY;
    c->deadline_ms = w->now_ms + cfg->idle_timeout_ms;
    /* OpenSSL may already hold application data read with the handshake, and the target
     * may have answered: start with both ends ready, the first EAGAIN clears them. */
    c->down.rd_ready = c->down.wr_ready = c->up.rd_ready = c->up.wr_ready = 1;
    return 0;
}

/* Handshake finished on the TLS end: identity, policy, next state. */
static void handshake_done(struct px_worker *w, struct px_conn *c, struct px_end *t)
{
    if (!t->is_down && cfg->mode == PX_MODE_SERVER) { /* --target-tls leg done */
        start_relay(w, c);
        return;
    }
    px_metrics_handshake((double)(now_us() - c->start_us) / 1e6);
    atomic_fetch_add(&px_metrics.hs_ok, 1);
    struct meshtls_identity *id = NULL;
    if (meshtls_tls_peer_identity(t->ssl, &id, NULL) == 0) {
        c->who = strdup(id->spiffe_id ? id->spiffe_id : id->subject ? id->subject : "-");
        c->serial = id->serial ? strdup(id->serial) : NULL;
    }
    if (cfg->mode == PX_MODE_SERVER) {
        struct meshtls_decision d;
        /* the policy of the context this connection started with (a reload may have
         * swapped in another since) */
        const struct meshtls_policy *pol =
            policy_idx >= 0 ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(t->ssl), policy_idx) : NULL;
        meshtls_policy_check(pol, id, cfg->service, &d); /* no policy: denied (fail closed) */
        c->decision = d.allow ? "allow" : "deny";
        meshtls_log(d.allow ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN,
                    "audit policy decision=%s client=%s id=%s serial=%s rule=\"%s\" reason=\"%s\"",
                    c->decision, c->peer_addr, c->who ? c->who : "-", c->serial ? c->serial : "-",
                    d.rule, d.reason);
        meshtls_identity_free(id);
        if (!d.allow) {
            atomic_fetch_add(&px_metrics.deny, 1);
            end_shut_write(t); /* close_notify, then close: the client reads EOF */
            conn_close(w, c, "denied by policy");
            return;
        }
        atomic_fetch_add(&px_metrics.allow, 1);
        start_connect(w, c); /* target connect starts as soon as policy allows */
        return;
    }
    meshtls_identity_free(id);
    start_relay(w, c);
}

static void step_handshake(struct px_worker *w, struct px_conn *c)
{
    struct px_end *t = c->hs;
    clear_err();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        handshake_done(w, c, t);
        return;
    }
    int se = SSL_get_error(t->ssl, r);
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
        return;
    char why[256];
    struct meshtls_err e = MESHTLS_ERR_INIT;
    meshtls_tls_verify_failure(t->ssl, why, sizeof(why));
    long v = SSL_get_verify_result(t->ssl);
    int no_cert = t->is_down && v == X509_V_OK && strstr(why, "no certificate");
    enum px_hs_error kind = px_metrics_classify(v, no_cert);
    atomic_fetch_add(&px_metrics.hs_fail, 1);
    atomic_fetch_add(&px_metrics.hs_err[kind], 1);
    meshtls_err_set_ssl(&e, MESHTLS_ETLS, "TLS handshake with %s failed%s%s",
                        t->is_down ? "client" : "target", why[0] ? ": " : "", why);
    set_why(c, "%s", e.msg);
    meshtls_log(MESHTLS_LOG_WARN, "client=%s %s", c->peer_addr, e.msg);
    conn_close(w, c, NULL);
}

static void step_connect(struct px_worker *w, struct px_conn *c)
{
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
        set_why(c, "cannot connect to target %s: %s", cfg->target, strerror(soerr));
        atomic_fetch_add(&px_metrics.backend_errors, 1);
        meshtls_log(MESHTLS_LOG_WARN, "client=%s id=%s %s", c->peer_addr, c->who ? c->who : "-",
                    c->why);
        conn_close_clean(w, c, NULL);
        return;
    }
    if (cfg->mode == PX_MODE_CLIENT || cfg->target_tls) {
        c->hs = &c->up;
        if (tls_attach(&c->up, cfg->mode == PX_MODE_CLIENT ? new_ssl(g_tls, 1)
                                                           : new_ssl(g_target_tls, 1)) != 0) {
            conn_close(w, c, "cannot create TLS connection");
            return;
        }
        SSL_set_connect_state(c->up.ssl);
        c->state = PX_HANDSHAKE;
        c->deadline_ms = w->now_ms + cfg->handshake_timeout_ms;
        step_handshake(w, c);
        return;
    }
    start_relay(w, c);
}

/* Copy bytes both ways.  @return 1 if it stopped early (call again). */
static int step_relay(struct px_worker *w, struct px_conn *c)
{
    int progress = 1, rounds = 0;
    while (progress && rounds++ < PX_STEP_MAX) {
        progress = 0;
        for (int dir = 0; dir < 2; dir++) {
            struct px_end *src = dir == 0 ? &c->down : &c->up;
            struct px_end *dst = dir == 0 ? &c->up : &c->down;
            if (dst->shut_pending && dst->wr_ready) {
                clear_err();
                int r = SSL_shutdown(dst->ssl);
                dst->shut_pending = r < 0 && SSL_get_error(dst->ssl, r) == SSL_ERROR_WANT_WRITE;
                if (dst->shut_pending)
                    dst->wr_ready = 0;
                ERR_clear_error();
            }
            if (dir == 0 && c->h1 && c->len[0] == 0) {
                /* HTTP/1.1 identity forwarding: raw bytes -> filter -> buf[0] */
                if (c->raw_len == 0 && !src->rd_eof && src->rd_ready) {
                    ssize_t n = end_read(src, c->raw, PX_RAW);
                    if (n > 0) {
                        c->raw_off = 0;
                        c->raw_len = (size_t)n;
                        c->bytes[0] += (unsigned long long)n;
                        progress = 1;
                    } else if (n == 0) {
                        src->rd_eof = 1;
                        progress = 1;
                    } else if (n == -2) {
                        conn_close(w, c, "client connection error");
                        return 0;
                    }
                }
                if (c->raw_len || c->h1->pending) {
                    if (!c->buf[0] && !(c->buf[0] = pool_get(w))) {
                        conn_close(w, c, "out of memory");
                        return 0;
                    }
                    size_t used = 0, made = 0;
                    int hr = px_h1_feed(c->h1, c->raw + c->raw_off, c->raw_len, &used, c->buf[0],
                                        PX_BUF, &made, c->inject);
                    c->raw_off += used;
                    c->raw_len -= used;
                    c->off[0] = 0;
                    c->len[0] = made;
                    if (hr != 0) {
                        conn_close(w, c,
                                   hr == PX_H1_E_TOO_BIG ? "HTTP request head too large (16 KiB)"
                                                         : "malformed HTTP/1.1 request");
                        return 0;
                    }
                    if (used || made)
                        progress = 1;
                }
            } else if (c->len[dir] == 0 && !src->rd_eof && src->rd_ready) {
                if (!c->buf[dir] && !(c->buf[dir] = pool_get(w))) {
                    conn_close(w, c, "out of memory");
                    return 0;
                }
                /* Fill the buffer before writing: a TLS end yields one record (<= 16 KiB)
                 * per call, so bulk data goes out in 64 KiB sends, not one per record. */
                size_t got = 0;
                for (;;) {
                    ssize_t n = end_read(src, c->buf[dir] + got, PX_BUF - got);
                    if (n > 0) {
                        got += (size_t)n;
                        if (!src->ssl || got == PX_BUF || !src->rd_ready)
                            break; /* a plain read(2) already took all the socket had */
                        continue;
                    }
                    if (n == 0) {
                        src->rd_eof = 1;
                        progress = 1;
                    } else if (n == -2) {
                        conn_close(
                            w, c, dir == 0 ? "client connection error" : "target connection error");
                        return 0;
                    }
                    break;
                }
                if (got) {
                    c->off[dir] = 0;
                    c->len[dir] = got;
                    c->bytes[dir] += (unsigned long long)got;
                    progress = 1;
                }
            }
            if (c->len[dir] > 0 && dst->wr_ready) {
                ssize_t n = end_write(dst, c->buf[dir] + c->off[dir], c->len[dir]);
                if (n > 0) {
                    c->off[dir] += (size_t)n;
                    c->len[dir] -= (size_t)n;
                    progress = 1;
                } else if (n == -2) {
                    conn_close(w, c,
                               dir == 0 ? "target closed while sending"
                                        : "client closed while receiving");
                    return 0;
                }
            }
            if (src->rd_eof && c->len[dir] == 0 && !dst->wr_shut &&
                !(dir == 0 && c->h1 && (c->raw_len || c->h1->pending))) {
                end_shut_write(dst); /* half-close follows the source */
                progress = 1;
            }
        }
        if (progress)
            c->deadline_ms = w->now_ms + cfg->idle_timeout_ms;
    }
    /* Nothing in flight: give the buffers back, an idle connection holds none. */
    for (int dir = 0; dir < 2; dir++)
        if (c->len[dir] == 0 && c->buf[dir]) {
            pool_put(w, c->buf[dir]);
            c->buf[dir] = NULL;
        }
    if (c->down.rd_eof && c->up.rd_eof && !c->len[0] && !c->len[1]) {
        conn_close(w, c, NULL);
        return 0;
    }
    return progress; /* still progressing after PX_STEP_MAX rounds: yield */
}

static void conn_step(struct px_worker *w, struct px_conn *c)
{
    int again = 0;
    enum px_state was = c->state;
    switch (c->state) {
    case PX_HANDSHAKE: step_handshake(w, c); break;
    case PX_CONNECT: step_connect(w, c); break;
    case PX_RELAY: again = step_relay(w, c); break;
    case PX_CLOSED: return;
    }
    /* entering the relay may have bytes to move right away (buffered by OpenSSL) */
    if (was != PX_RELAY && c->state == PX_RELAY)
        again = step_relay(w, c);
    if (again && !c->on_ready && c->state != PX_CLOSED) {
        c->on_ready = 1;
        c->ready_next = w->ready;
        w->ready = c;
    }
}

static void accept_batch(struct px_worker *w)
{
    for (int i = 0; i < PX_ACCEPT_MAX; i++) {
        if (atomic_load(&px_metrics.active) >= cfg->max_conns) {
            int64_t t = now_ms(), last = atomic_load(&max_logged_ms);
            /* once per episode, and at most once a minute under churn */
            if (!atomic_exchange(&max_logged, 1) && (last == 0 || t - last >= 60000) &&
                atomic_compare_exchange_strong(&max_logged_ms, &last, t))
                meshtls_log(MESHTLS_LOG_WARN,
                            "max-conns %d reached: new connections wait in the backlog "
                            "until one closes",
                            cfg->max_conns);
            epoll_ctl(w->epfd, EPOLL_CTL_DEL, listen_fd, NULL);
            w->listening = 0;
            return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == ECONNABORTED || e == EINTR)
                continue; /* that client gave up: try the next one */
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* The clients stay in the backlog, so the level-triggered listener would be
                 * reported again at once: without a pause every core spins on failing
                 * accept4() calls.  Stop watching it for a while, as nginx and HAProxy do;
                 * connections closing meanwhile free descriptors. */
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, listen_fd, NULL);
                w->listening = 0;
                w->paused_until = now_ms() + PX_ACCEPT_PAUSE_MS;
                atomic_fetch_add(&px_metrics.accept_paused, 1);
                int64_t t = now_ms(), last = atomic_load(&fd_logged_ms);
                /* once per episode (1: in one, 2: logged), and at most once a minute when
                 * episodes follow each other while the backlog empties */
                int was = 0;
                if (atomic_compare_exchange_strong(&fd_logged, &was, 1) &&
                    (last == 0 || t - last >= 60000) &&
                    atomic_compare_exchange_strong(&fd_logged_ms, &last, t)) {
                    atomic_store(&fd_logged, 2);
                    meshtls_log(MESHTLS_LOG_ERROR,
                                "cannot accept new connections: %s; the listener pauses %d ms "
                                "at a time until descriptors are free (raise the limit with "
                                "`ulimit -n` or LimitNOFILE=, or lower --max-conns)",
                                strerror(e), PX_ACCEPT_PAUSE_MS);
                }
            }
            return; /* EAGAIN: another worker took it, or the batch is done */
        }
        if (atomic_load(&fd_logged) && atomic_exchange(&fd_logged, 0) == 2)
            meshtls_log(MESHTLS_LOG_INFO, "accepting new connections again");
        struct px_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        atomic_fetch_add(&px_metrics.active, 1);
        atomic_fetch_add(&px_metrics.conns_total, 1);
        c->down = (struct px_end){.c = c, .fd = fd, .is_down = 1};
        c->up = (struct px_end){.c = c, .fd = -1};
        c->start_us = now_us();
        memcpy(&c->peer_sa, &ss, sl < sizeof(c->peer_sa) ? sl : sizeof(c->peer_sa));
        addr_str((struct sockaddr *)&ss, c->peer_addr, sizeof(c->peer_addr));
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        if (watch(w, &c->down) != 0) {
            conn_close(w, c, "epoll_ctl failed");
            continue;
        }
        if (cfg->mode == PX_MODE_SERVER) {
            c->hs = &c->down;
            if (tls_attach(&c->down, new_ssl(g_tls, 0)) != 0) {
                conn_close(w, c, "cannot create TLS connection");
                continue;
            }
            SSL_set_accept_state(c->down.ssl);
            c->state = PX_HANDSHAKE;
            c->deadline_ms = w->now_ms + cfg->handshake_timeout_ms;
        } else {
            start_connect(w, c);
        }
    }
}

static void sweep_timeouts(struct px_worker *w)
{
    int64_t now = now_ms();
    for (struct px_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline_ms > now)
            continue;
        if (c->state == PX_HANDSHAKE) {
            atomic_fetch_add(&px_metrics.hs_fail, 1);
            atomic_fetch_add(&px_metrics.hs_err[PX_HSE_TIMEOUT], 1);
            conn_close(w, c, "TLS handshake timeout");
        } else if (c->state == PX_CONNECT) {
            atomic_fetch_add(&px_metrics.backend_errors, 1);
            conn_close_clean(w, c, "timeout connecting to the target");
        } else {
            conn_close_clean(w, c, "idle timeout");
        }
    }
}

static void *worker_main(void *arg)
{
    struct px_worker *w = arg;
    struct epoll_event evs[128];
    int64_t last_sweep = now_ms();
    w->now_ms = last_sweep;
    for (;;) {
        int stop = atomic_load(&stopping);
        if (stop && w->listening) {
            epoll_ctl(w->epfd, EPOLL_CTL_DEL, listen_fd, NULL);
            w->listening = 0;
        }
        if (stop == 2) /* the drain timed out: close what is left, then exit to be joined */
            for (struct px_conn *c = w->conns, *nx; c; c = nx) {
                nx = c->next;
                conn_close_clean(w, c, "shutdown timeout");
            }
        if (stop && !w->conns && !w->freeing)
            break;
        if (!stop && !w->listening && atomic_load(&px_metrics.active) < cfg->max_conns &&
            w->now_ms >= w->paused_until) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
            if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, listen_fd, &ev) == 0)
                w->listening = 1;
        }
        int n = epoll_wait(w->epfd, evs, 128, w->ready ? 0 : 100);
        w->now_ms = now_ms();
        for (int i = 0; i < n; i++) {
            struct px_end *e = evs[i].data.ptr;
            if (!e) {
                if (!atomic_load(&stopping))
                    accept_batch(w);
                continue;
            }
            uint32_t ev = evs[i].events;
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                e->rd_ready = 1, e->drained = 0;
            if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                e->rdhup = 1;
            if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                e->wr_ready = 1;
            conn_step(w, e->c);
        }
        /* connections that yielded get another turn */
        struct px_conn *r = w->ready;
        w->ready = NULL;
        while (r) {
            struct px_conn *nx = r->ready_next;
            r->on_ready = 0;
            conn_step(w, r);
            r = nx;
        }
        int64_t now = w->now_ms;
        if (now - last_sweep >= 100) {
            sweep_timeouts(w);
            last_sweep = now;
        }
        while (w->freeing) {
            struct px_conn *c = w->freeing;
            w->freeing = c->free_next;
            if (c->on_ready) { /* still on the ready list: unlink first */
                struct px_conn **pp = &w->ready;
                while (*pp && *pp != c)
                    pp = &(*pp)->ready_next;
                if (*pp)
                    *pp = c->ready_next;
            }
            conn_free(w, c);
        }
    }
    return NULL;
}

/* ---- reload ----------------------------------------------------------- */

struct file_stamp {
    const char *path;
    struct timespec mtime;
    ino_t ino;
    off_t size;
};

static void stamp(struct file_stamp *s)
{
    struct stat st;
    if (s->path && stat(s->path, &st) == 0) {
        s->mtime = st.st_mtim;
        s->ino = st.st_ino;
        s->size = st.st_size;
    }
}

static int stamp_changed(struct file_stamp *s)
{
    struct file_stamp old = *s;
    stamp(s);
    return s->path &&
           (old.mtime.tv_sec != s->mtime.tv_sec || old.mtime.tv_nsec != s->mtime.tv_nsec ||
            old.ino != s->ino || old.size != s->size);
}

static void swap_ctx(struct px_tls *h, SSL_CTX *ctx, int64_t not_after)
{
    pthread_mutex_lock(&h->mu);
    SSL_CTX *old = h->ctx;
    h->ctx = ctx;
    h->not_after = not_after;
    h->generation++;
    pthread_mutex_unlock(&h->mu);
    SSL_CTX_free(old); /* open connections keep their own references */
}

static void reload(const char *why)
{
    SSL_CTX *ctx = NULL, *tctx = NULL;
    int64_t not_after = 0;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    if (px_tls_build(cfg, &ctx, &not_after, &e) != 0 ||
        (cfg->target_tls && px_target_tls_build(cfg, &tctx, &e) != 0)) {
        SSL_CTX_free(ctx);
        atomic_fetch_add(&px_metrics.reload_fail, 1);
        meshtls_log(MESHTLS_LOG_ERROR,
                    "reload (%s) failed, keeping the current certificate and policy: %s", why,
                    e.msg);
        return;
    }
    if (tctx)
        swap_ctx(g_target_tls, tctx, 0);
    swap_ctx(g_tls, ctx, not_after);
    atomic_fetch_add(&px_metrics.reload_ok, 1);
    meshtls_log(MESHTLS_LOG_INFO,
                "reload (%s): new TLS context and policy in service for new connections", why);
}

/* Is `sa` a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)? */
static int is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

int px_run(const struct px_config *c, struct px_tls *tls, struct px_tls *target_tls,
           struct meshtls_err *err)
{
    int rc = 0, one = 1;
    struct sockaddr_storage la;
    socklen_t ll;
    pthread_t status_th;
    int status_started = 0;
    cfg = c;
    g_tls = tls;
    g_target_tls = target_tls;

    /* Signals go to the main thread only: block them before any thread starts. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((rc = px_resolve(c->target, 0, &target_addr, &target_len, err)) != 0)
        return meshtls_err_set(err, rc, "--target: %s", err ? err->msg : "");
    if ((rc = px_resolve(c->listen, 1, &la, &ll, err)) != 0)
        return meshtls_err_set(err, rc, "--listen: %s", err ? err->msg : "");
    /* Plaintext only on loopback unless the operator says --insecure-… (ghostunnel's
     * --unsafe-listen / --unsafe-target). */
    if (c->mode == PX_MODE_CLIENT && !c->insecure_listen && !is_loopback(&la))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--listen %s is not a loopback address: the client side accepts "
                               "plaintext, so anyone on that network could use its identity; "
                               "listen on 127.0.0.1 or ::1, or add --insecure-listen",
                               c->listen);
    if (c->mode == PX_MODE_SERVER && !c->target_tls && !c->insecure_target &&
        !is_loopback(&target_addr))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--target %s is not a loopback address: the bytes would leave "
                               "this host in plaintext; use --target-tls, a loopback target, or "
                               "add --insecure-target",
                               c->target);
    listen_fd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* accepted sockets inherit it: no setsockopt per connection */
    setsockopt(listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&la, ll) != 0 ||
        listen(listen_fd, 4096) != 0) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "--listen %s: %s", c->listen, strerror(errno));
        if (listen_fd >= 0)
            close(listen_fd);
        listen_fd = -1;
        return rc;
    }
    ll = sizeof(la);
    getsockname(listen_fd, (struct sockaddr *)&la, &ll);
    char shown[80];
    addr_str((struct sockaddr *)&la, shown, sizeof(shown));

    if (c->status && (rc = px_status_start(c->status, tls, &status_th, err)) != 0) {
        close(listen_fd);
        return rc;
    }
    status_started = c->status != NULL;

    workers = calloc((size_t)c->workers, sizeof(*workers));
    int started = 0;
    if (!workers) {
        rc =
            meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory starting %d worker(s)", c->workers);
        goto fail;
    }
    for (int i = 0; i < c->workers; i++) {
        workers[i].id = i;
        workers[i].epfd = epoll_create1(EPOLL_CLOEXEC);
        if (workers[i].epfd < 0 ||
            pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0) {
            rc =
                meshtls_err_set(err, MESHTLS_EIO, "cannot start worker %d: %s", i, strerror(errno));
            if (workers[i].epfd >= 0)
                close(workers[i].epfd);
            goto fail;
        }
        started++;
    }
    atomic_store(&px_metrics.listening, 1);
    meshtls_log(MESHTLS_LOG_INFO, "proxy %s listening on %s, target %s, %d worker(s)",
                c->mode == PX_MODE_SERVER ? "server" : "client", shown, c->target, c->workers);
    /* A machine-readable line for scripts and tests. */
    printf("listening on %s\n", shown);
    fflush(stdout);

    /* every file a reload reads: TLS files both ways, and the policy file */
    struct file_stamp files[PX_NFILES] = {
        {.path = c->tls.cert_file},
        {.path = c->tls.key_file},
        {.path = c->tls.ca_file},
        {.path = c->tls.crl_file},
        {.path = c->target_opts.cert_file},
        {.path = c->target_opts.key_file},
        {.path = c->target_opts.ca_file},
        {.path = c->target_opts.crl_file},
        {.path = c->mode == PX_MODE_SERVER ? c->policy_file : NULL}};
    for (int i = 0; i < PX_NFILES; i++)
        stamp(&files[i]);
    int64_t next_interval = c->reload_interval_s ? now_ms() + c->reload_interval_s * 1000LL : 0;
    int64_t pending_change = 0;
    for (;;) {
        struct timespec to = {.tv_sec = 0, .tv_nsec = 250 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &to);
        if (sig == SIGTERM || sig == SIGINT) {
            meshtls_log(MESHTLS_LOG_INFO,
                        "%s: no longer accepting; draining %lld connection(s) "
                        "for up to %d ms",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT",
                        (long long)atomic_load(&px_metrics.active), c->shutdown_timeout_ms);
            break;
        }
        if (sig == SIGHUP)
            reload("SIGHUP");
        int64_t now = now_ms();
        if (c->watch_files) {
            int changed = 0;
            for (int i = 0; i < PX_NFILES; i++)
                changed |= stamp_changed(&files[i]);
            if (changed)
                pending_change = now; /* let the writer finish: settle 500 ms */
            else if (pending_change && now - pending_change >= 500) {
                pending_change = 0;
                reload("file change");
            }
        }
        if (next_interval && now >= next_interval) {
            reload("interval");
            next_interval = now + c->reload_interval_s * 1000LL;
        }
    }

    atomic_store(&stopping, 1);
    /* Stop listening at once: a socket merely removed from epoll would still complete TCP
     * handshakes that nobody serves until we exit.  shutdown() on a listening socket makes
     * the kernel refuse new connections (ECONNREFUSED: clients and load balancers retry
     * elsewhere) and wakes the workers, while the descriptor number stays ours until every
     * worker is joined, so no worker can accept4() on a reused number. */
    shutdown(listen_fd, SHUT_RDWR);
    atomic_store(&px_metrics.listening, 0);
    int64_t deadline = now_ms() + c->shutdown_timeout_ms;
    int drained = 0;
    while (now_ms() < deadline) {
        if (atomic_load(&px_metrics.active) == 0) {
            drained = 1;
            break;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!drained) {
        meshtls_log(MESHTLS_LOG_WARN, "shutdown timeout: closing %lld connection(s)",
                    (long long)atomic_load(&px_metrics.active));
        atomic_store(&stopping, 2);
    }
    /* Every worker is joined on every path, so nothing the command frees after we return
     * (policy, caches, contexts) can still be read by one. */
    for (int i = 0; i < c->workers; i++) {
        pthread_join(workers[i].th, NULL);
        close(workers[i].epfd);
        for (int k = 0; k < workers[i].pool_n; k++)
            free(workers[i].pool[k]);
    }
    free(workers);
    workers = NULL;
    if (drained)
        meshtls_log(MESHTLS_LOG_INFO, "shutdown complete: all connections drained");
    if (status_started)
        px_status_stop(status_th);
    close(listen_fd);
    listen_fd = -1;
    return 0;

fail:
    /* Start-up failed after threads began: stop and join each one before returning, so
     * the caller may free what they read. */
    atomic_store(&stopping, 2);
    shutdown(listen_fd, SHUT_RDWR);
    for (int i = 0; i < started; i++) {
        pthread_join(workers[i].th, NULL);
        close(workers[i].epfd);
    }
    free(workers);
    workers = NULL;
    if (status_started)
        px_status_stop(status_th);
    close(listen_fd);
    listen_fd = -1;
    return rc;
}
