/*
 * test_net.c - the engine (src/net) with a toy protocol: two engines in one process,
 * plain and TLS echo, a plaintext first byte on a TLS listener, a bounded line read,
 * the job pool, timers, max-conns and the drain.
 *
 * The toy protocol: read one line (at most 32 bytes with the newline); "sleep <ms>"
 * answers after a job that sleeps on a pool thread; "wait" answers nothing (the
 * deadline answers "timeout"); anything else is echoed back as "echo:<line>" and the
 * connection then echoes raw bytes until EOF.  Plaintext on the TLS listener gets
 * "plain:<first line>".  Every client socket has a receive timeout: no test hangs.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "check.h"
#include "net.h"

enum toy_state { TOY_LINE = 0, TOY_JOB, TOY_ECHO, TOY_WAIT };

struct toy_job {
    struct mt_job job;
    int ms;
    char out[64];
};

struct toy {
    enum toy_state st;
    struct mt_linebuf lb;
    char out[600];
    size_t out_len, out_off;
    int close_after;
    struct toy_job *job;
};

static atomic_int toy_closed;
static atomic_int toy_jobs_done;

static int toy_flush(struct mt_conn *c)
{
    struct toy *t = mt_conn_proto(c);
    while (t->out_off < t->out_len && c->down.wr_ready) {
        ssize_t n = mt_end_write(&c->down, t->out + t->out_off, t->out_len - t->out_off);
        if (n == -2) {
            mt_conn_close(c, "write error");
            return -1;
        }
        if (n > 0)
            t->out_off += (size_t)n;
    }
    if (t->out_off == t->out_len) {
        t->out_off = t->out_len = 0;
        if (t->close_after) {
            mt_end_shut_write(&c->down);
            mt_conn_close(c, "done");
            return -1;
        }
    }
    return 0;
}

static void toy_say(struct mt_conn *c, const char *a, const char *b, size_t blen)
{
    struct toy *t = mt_conn_proto(c);
    size_t al = strlen(a);
    if (t->out_len + al + blen > sizeof(t->out))
        return;
    memcpy(t->out + t->out_len, a, al);
    memcpy(t->out + t->out_len + al, b, blen);
    t->out_len += al + blen;
}

static void job_work(struct mt_job *j)
{
    struct toy_job *tj = (struct toy_job *)j;
    struct timespec ts = {tj->ms / 1000, (long)(tj->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* blocking: fine here, on a pool thread */
    snprintf(tj->out, sizeof(tj->out), "slept %d\n", tj->ms);
}

static void job_done(struct mt_job *j)
{
    struct toy_job *tj = (struct toy_job *)j;
    struct mt_conn *c = j->c;
    atomic_fetch_add(&toy_jobs_done, 1);
    if (!mt_conn_closed(c)) {
        struct toy *t = mt_conn_proto(c);
        t->job = NULL;
        toy_say(c, "", tj->out, strlen(tj->out));
        t->close_after = 1;
        toy_flush(c);
    }
    free(tj);
}

static int toy_io(struct mt_conn *c)
{
    struct toy *t = mt_conn_proto(c);
    if (toy_flush(c) != 0)
        return 0;
    if (t->st == TOY_LINE) {
        enum mt_line_result r = mt_conn_read_line(c, &t->lb, 32);
        if (r == MT_LINE_AGAIN)
            return 0;
        if (r == MT_LINE_TOO_LONG) {
            toy_say(c, "too long\n", "", 0);
            t->close_after = 1;
            toy_flush(c);
            return 0;
        }
        if (r != MT_LINE_DONE) {
            mt_conn_close(c, "eof before the line");
            return 0;
        }
        if (t->lb.len > 6 && !memcmp(t->lb.buf, "sleep ", 6)) {
            struct toy_job *tj = calloc(1, sizeof(*tj));
            if (!tj) {
                mt_conn_close(c, "oom");
                return 0;
            }
            tj->ms = atoi(t->lb.buf + 6);
            tj->job.work = job_work;
            tj->job.done = job_done;
            if (mt_job_submit(c, &tj->job) != 0) {
                free(tj);
                toy_say(c, "busy\n", "", 0);
                t->close_after = 1;
                toy_flush(c);
                return 0;
            }
            t->job = tj;
            t->st = TOY_JOB;
            return 0;
        }
        if (t->lb.len == 5 && !memcmp(t->lb.buf, "wait\n", 5)) {
            t->st = TOY_WAIT;
            mt_conn_set_timeout(c, 150);
            return 0;
        }
        toy_say(c, "echo:", t->lb.buf, t->lb.len);
        /* bytes read with the line belong to the echo that follows */
        toy_say(c, "", t->lb.buf + t->lb.len, t->lb.have - t->lb.len);
        t->st = TOY_ECHO;
        if (toy_flush(c) != 0)
            return 0;
    }
    if (t->st == TOY_ECHO) {
        char buf[256];
        while (t->out_len == 0 && c->down.rd_ready) {
            ssize_t n = mt_end_read(&c->down, buf, sizeof(buf));
            if (n == 0) {
                t->close_after = 1;
                toy_flush(c);
                return 0;
            }
            if (n < 0) {
                if (n == -2)
                    mt_conn_close(c, "read error");
                return 0;
            }
            toy_say(c, "", buf, (size_t)n);
            if (toy_flush(c) != 0)
                return 0;
        }
    }
    return 0;
}

static void toy_plaintext(struct mt_conn *c)
{
    struct toy *t = mt_conn_proto(c);
    enum mt_line_result r = mt_conn_read_line(c, &t->lb, 32);
    if (r == MT_LINE_AGAIN)
        return;
    if (r == MT_LINE_DONE)
        toy_say(c, "plain:", t->lb.buf, t->lb.len);
    t->close_after = 1;
    toy_flush(c);
}

static int toy_io_any(struct mt_conn *c)
{
    if (!c->down.ssl && mt_conn_listener_arg(c)) { /* the TLS listener's plaintext path */
        toy_plaintext(c);
        return 0;
    }
    return toy_io(c);
}

static void toy_tls_done(struct mt_conn *c, struct mt_end *e)
{
    (void)c, (void)e;
}

static void toy_tls_error(struct mt_conn *c, struct mt_end *e, int timeout)
{
    (void)c, (void)e, (void)timeout;
}

static void toy_timeout(struct mt_conn *c)
{
    toy_say(c, "timeout\n", "", 0);
    ((struct toy *)mt_conn_proto(c))->close_after = 1;
    toy_flush(c);
    if (!mt_conn_closed(c))
        mt_conn_close(c, "timeout");
}

static void toy_close(struct mt_conn *c, const char *why)
{
    (void)c, (void)why;
    atomic_fetch_add(&toy_closed, 1);
}

static const struct mt_proto_ops toy_ops = {
    .name = "toy",
    .proto_size = sizeof(struct toy),
    .on_plaintext = toy_plaintext,
    .on_tls_done = toy_tls_done,
    .on_tls_error = toy_tls_error,
    .on_io = toy_io_any,
    .on_timeout = toy_timeout,
    .on_close = toy_close,
};

/* ---- a self-signed server certificate, in memory ---------------------------------- */

static SSL_CTX *server_ctx(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"toy", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    X509_sign(x, k, EVP_sha256());
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, x);
    SSL_CTX_use_PrivateKey(ctx, k);
    X509_free(x);
    EVP_PKEY_free(k);
    return ctx;
}

static void snap_destroy(struct mt_snap *s)
{
    SSL_CTX_free(s->ctx);
    free(s);
}

static struct mt_snap *new_snap(SSL_CTX *ctx)
{
    struct mt_snap *s = calloc(1, sizeof(*s));
    mt_snap_init(s, snap_destroy);
    s->ctx = ctx;
    return s;
}

/* ---- clients ---------------------------------------------------------------------- */

static int port_of(const char *addr)
{
    const char *p = strrchr(addr, ':');
    return p ? atoi(p + 1) : 0;
}

static int dial(const char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_of(addr))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0}; /* no read waits longer */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Read until EOF or `cap` - 1 bytes; @return bytes. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

/* One exchange over plain TCP: send `msg`, half-close, return everything read. */
static void exchange(const char *addr, const char *msg, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = dial(addr);
    if (fd < 0)
        return;
    if (write(fd, msg, strlen(msg)) != (ssize_t)strlen(msg)) {
        close(fd);
        return;
    }
    shutdown(fd, SHUT_WR);
    read_all(fd, out, cap);
    close(fd);
}

static void tls_exchange(const char *addr, const char *msg, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = dial(addr);
    if (fd < 0)
        return;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(cctx);
    SSL_set_fd(ssl, fd);
    size_t got = 0;
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, msg, (int)strlen(msg)) > 0) {
        SSL_shutdown(ssl); /* close_notify: the toy echo sees EOF */
        int n;
        while (got + 1 < cap && (n = SSL_read(ssl, out + got, (int)(cap - 1 - got))) > 0)
            got += (size_t)n;
    }
    out[got] = '\0';
    SSL_free(ssl);
    SSL_CTX_free(cctx);
    close(fd);
}

/* ---- an engine with a plain and a TLS listener ------------------------------------- */

struct rig {
    struct mt_engine *e;
    struct mt_listener *plain, *tls;
    struct mt_snap_holder hp, ht;
};

static int rig_start(struct rig *r, int workers, int max_conns)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->hp.mu, NULL);
    pthread_mutex_init(&r->ht.mu, NULL);
    mt_snap_publish(&r->hp, new_snap(NULL));
    mt_snap_publish(&r->ht, new_snap(server_ctx()));
    struct mt_engine_opts eo = {.workers = workers, .job_threads = 2, .job_queue = 4};
    struct mt_listener_opts lp = {.name = "plain",
                                  .addr = "127.0.0.1:0",
                                  .ops = &toy_ops,
                                  .snap = &r->hp,
                                  .max_conns = max_conns,
                                  .handshake_timeout_ms = 1000};
    struct mt_listener_opts lt = lp;
    lt.name = "tls";
    lt.snap = &r->ht;
    lt.tls = 1;
    lt.sniff_plaintext = 1;
    lt.arg = (void *)1; /* toy_io_any: this listener answers plaintext */
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (mt_engine_new(&eo, &r->e, &err) != 0 || mt_engine_listen(r->e, &lp, &r->plain, &err) ||
        mt_engine_listen(r->e, &lt, &r->tls, &err) || mt_engine_start(r->e, &err)) {
        fprintf(stderr, "rig: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void rig_stop(struct rig *r)
{
    mt_engine_drain(r->e, 1000, NULL);
    mt_engine_free(r->e);
    mt_snap_holder_clear(&r->hp);
    mt_snap_holder_clear(&r->ht);
}

TEST(two_engines_echo)
{
    struct rig a, b;
    CHECK_INT_EQ(rig_start(&a, 2, 100), 0);
    CHECK_INT_EQ(rig_start(&b, 1, 100), 0);
    char out[512];
    exchange(mt_listener_addr(a.plain), "hello\nmore bytes", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:hello\nmore bytes");
    exchange(mt_listener_addr(b.plain), "other\n", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:other\n");
    tls_exchange(mt_listener_addr(a.tls), "secure\nstream", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:secure\nstream");
    tls_exchange(mt_listener_addr(b.tls), "b\n", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:b\n");
    CHECK(strcmp(mt_listener_addr(a.plain), mt_listener_addr(b.plain)) != 0);
    rig_stop(&a);
    /* the other engine still serves after the first one is gone */
    exchange(mt_listener_addr(b.plain), "still\n", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:still\n");
    rig_stop(&b);
}

TEST(plaintext_first_byte_on_tls_listener)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    char out[512];
    exchange(mt_listener_addr(r.tls), "GET / HTTP/1.1\n", out, sizeof(out));
    CHECK_STR_EQ(out, "plain:GET / HTTP/1.1\n");
    rig_stop(&r);
}

TEST(bounded_line_read)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    char out[512];
    exchange(mt_listener_addr(r.plain), "0123456789012345678901234567890123456789\n", out,
             sizeof(out));
    CHECK_STR_EQ(out, "too long\n");
    /* a line split over many writes arrives whole */
    int fd = dial(mt_listener_addr(r.plain));
    CHECK(fd >= 0);
    const char *parts[] = {"sp", "li", "t\n"};
    for (int i = 0; i < 3; i++) {
        CHECK(write(fd, parts[i], 2) == 2);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    shutdown(fd, SHUT_WR);
    read_all(fd, out, sizeof(out));
    close(fd);
    CHECK_STR_EQ(out, "echo:split\n");
    rig_stop(&r);
}

TEST(jobs_return_to_the_loop)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    int before = atomic_load(&toy_jobs_done);
    /* a slow job does not hold the loop: a plain echo is served meanwhile */
    int slow = dial(mt_listener_addr(r.plain));
    CHECK(write(slow, "sleep 300\n", 10) == 10);
    char out[512];
    exchange(mt_listener_addr(r.plain), "quick\n", out, sizeof(out));
    CHECK_STR_EQ(out, "echo:quick\n");
    read_all(slow, out, sizeof(out));
    close(slow);
    CHECK_STR_EQ(out, "slept 300\n");
    /* a connection that closes while its job runs: the job completes, nothing leaks */
    int gone = dial(mt_listener_addr(r.plain));
    CHECK(write(gone, "sleep 100\n", 10) == 10);
    close(gone);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    CHECK(atomic_load(&toy_jobs_done) >= before + 2);
    rig_stop(&r);
}

TEST(job_queue_is_bounded)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    /* 2 pool threads and a queue of 4: of 10 slow jobs at once, some are refused */
    int fds[10];
    for (int i = 0; i < 10; i++) {
        fds[i] = dial(mt_listener_addr(r.plain));
        CHECK(write(fds[i], "sleep 200\n", 10) == 10);
    }
    int busy = 0, slept = 0;
    for (int i = 0; i < 10; i++) {
        char out[64];
        read_all(fds[i], out, sizeof(out));
        close(fds[i]);
        busy += !strcmp(out, "busy\n");
        slept += !strcmp(out, "slept 200\n");
    }
    CHECK(busy > 0);
    CHECK(slept >= 4);
    CHECK_INT_EQ(busy + slept, 10);
    rig_stop(&r);
}

TEST(timers)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    char out[64];
    int fd = dial(mt_listener_addr(r.plain));
    CHECK(write(fd, "wait\n", 5) == 5);
    read_all(fd, out, sizeof(out)); /* the 150 ms deadline answers, well before 5 s */
    close(fd);
    CHECK_STR_EQ(out, "timeout\n");
    /* a TLS client that never finishes its handshake is closed at the handshake timeout */
    fd = dial(mt_listener_addr(r.tls));
    unsigned char hello = 0x16;
    CHECK(write(fd, &hello, 1) == 1);
    size_t n = read_all(fd, out, sizeof(out));
    close(fd);
    CHECK_INT_EQ(n, 0);
    rig_stop(&r);
}

TEST(max_conns_waits_in_backlog)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 1, 1), 0);
    int first = dial(mt_listener_addr(r.plain));
    CHECK(write(first, "hold\n", 5) == 5);
    char out[64];
    CHECK(read(first, out, 10) == 10); /* "echo:hold\n": the first one is served */
    int second = dial(mt_listener_addr(r.plain));
    CHECK(write(second, "next\n", 5) == 5);
    shutdown(second, SHUT_WR);
    struct timeval tv = {0, 300000};
    setsockopt(second, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    CHECK(read(second, out, sizeof(out)) < 0); /* waits: not served while the first is open */
    close(first);
    tv.tv_sec = 5;
    setsockopt(second, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    read_all(second, out, sizeof(out));
    close(second);
    CHECK_STR_EQ(out, "echo:next\n");
    rig_stop(&r);
}

TEST(drain)
{
    struct rig r;
    CHECK_INT_EQ(rig_start(&r, 2, 100), 0);
    char addr[80];
    snprintf(addr, sizeof(addr), "%s", mt_listener_addr(r.plain));
    int fd = dial(addr);
    CHECK(write(fd, "open\n", 5) == 5);
    char out[64];
    CHECK(read(fd, out, 10) == 10);
    CHECK_INT_EQ(mt_engine_active(r.e), 1);
    long long left = -1;
    int before = atomic_load(&toy_closed);
    CHECK_INT_EQ(mt_engine_drain(r.e, 200, &left), 0); /* one stayed open: closed at 200 ms */
    CHECK_INT_EQ(left, 1);
    CHECK(atomic_load(&toy_closed) == before + 1);
    CHECK_INT_EQ(read_all(fd, out, sizeof(out)), 0); /* it sees EOF */
    close(fd);
    /* the listener refuses at once, while the engine still exists */
    CHECK(dial(addr) < 0 && errno == ECONNREFUSED);
    mt_engine_free(r.e);
    mt_snap_holder_clear(&r.hp);
    mt_snap_holder_clear(&r.ht);

    /* nothing open: the drain returns at once, drained */
    CHECK_INT_EQ(rig_start(&r, 1, 100), 0);
    CHECK_INT_EQ(mt_engine_drain(r.e, 5000, &left), 1);
    CHECK_INT_EQ(left, 0);
    mt_engine_free(r.e);
    mt_snap_holder_clear(&r.hp);
    mt_snap_holder_clear(&r.ht);
}

TEST(snapshots_are_refcounted)
{
    struct mt_snap_holder h = MT_SNAP_HOLDER_INIT;
    struct mt_snap *a = new_snap(NULL), *b = new_snap(NULL);
    mt_snap_publish(&h, a);
    CHECK_INT_EQ(a->generation, 1);
    struct mt_snap *held = mt_snap_acquire(&h); /* a connection holds `a` */
    CHECK(held == a);
    mt_snap_publish(&h, b); /* a reload: `a` lives on for its connection */
    CHECK_INT_EQ(atomic_load(&a->refs), 1);
    CHECK_INT_EQ(b->generation, 2);
    struct mt_snap *now = mt_snap_acquire(&h);
    CHECK(now == b);
    mt_snap_release(now);
    mt_snap_release(held); /* frees `a` (ASan checks) */
    mt_snap_holder_clear(&h);
}

TEST(bad_options_are_refused)
{
    struct mt_engine *e = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct mt_engine_opts bad = {.workers = 0};
    CHECK_INT_EQ(mt_engine_new(&bad, &e, &err), MESHTLS_EINVAL);
    struct mt_engine_opts ok = {.workers = 1};
    CHECK_INT_EQ(mt_engine_new(&ok, &e, &err), 0);
    struct mt_snap_holder h = MT_SNAP_HOLDER_INIT;
    struct mt_listener_opts lo = {
        .name = "x", .addr = "127.0.0.1:0", .ops = &toy_ops, .snap = &h, .max_conns = 0};
    CHECK_INT_EQ(mt_engine_listen(e, &lo, NULL, &err), MESHTLS_EINVAL);
    lo.max_conns = 1;
    lo.addr = "no-port";
    CHECK_INT_EQ(mt_engine_listen(e, &lo, NULL, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "no-port") != NULL);
    mt_engine_free(e); /* never started */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(snapshots_are_refcounted);
    RUN(bad_options_are_refused);
    RUN(two_engines_echo);
    RUN(plaintext_first_byte_on_tls_listener);
    RUN(bounded_line_read);
    RUN(jobs_return_to_the_loop);
    RUN(job_queue_is_bounded);
    RUN(timers);
    RUN(max_conns_waits_in_backlog);
    RUN(drain);
    return check_summary();
}
