#define _GNU_SOURCE
/*
 * floor.c - the in-memory handshake floor (issue 5): meshtls's own server and
 * client contexts (meshtls_tls_server_ctx_new / meshtls_tls_client_ctx_new,
 * with the proxy's extra SSL_CTX settings) joined by a BIO pair, one thread,
 * no sockets.  It reports the SERVER side's CPU time per full and per resumed
 * mTLS handshake, measured with CLOCK_THREAD_CPUTIME_ID around every server
 * call only (SSL_new .. SSL_free), so a regression in TLS settings shows
 * without the network or the event loop.
 *
 *   floor SERVER.crt SERVER.key CLIENT.crt CLIENT.key CA.crt [-n N] [-r RUNS] [-w SECONDS]
 *         [-o CONFIG] [-L 1]
 *
 * -L 1 turns on OpenSSL 3.0's built-in EC key path (meshtls_tls_use_legacy_ec), as
 * `meshtls proxy` runs by default; rows then end in "+ legacy EC".
 *
 * Each configuration does RUNS runs of N full handshakes then N resumed ones
 * (each resuming the previous connection's session); one connection = the
 * handshake, 32 bytes echoed, close_notify both ways.  Printed: the median
 * (and min..max) over the runs, in microseconds per handshake.  -w bounds the
 * whole tool's time (default 120 s); a run cut short is reported as such.
 *
 * Configurations:
 *   proxy-default   session cache (20000, 5 min) + verified-chain cache (10000),
 *                   1 ticket: what `meshtls proxy server` runs with by default
 *   no-verify-cache session cache only
 *   no-session-cache verified-chain cache only, OpenSSL's stateless tickets (2)
 *   no-caches       OpenSSL's defaults: stateless tickets (2), full verification
 *   no-caches-1tkt  the same with one ticket
 *   no-tickets      no resumption at all, full verification (full only)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "meshtls/tls.h"

static double thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double server_us; /* accumulated server-side CPU */
#define SRV(expr)                                                                                  \
    ({                                                                                             \
        double t0_ = thread_cpu_us();                                                              \
        __typeof__(expr) r_ = (expr);                                                              \
        server_us += thread_cpu_us() - t0_;                                                        \
        r_;                                                                                        \
    })

/* One connection.  @return 1 resumed, 0 full, -1 failure; *next gets the
 * client's newest session (caller frees). */
static int one_conn(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *resume, SSL_SESSION **next)
{
    struct meshtls_err err = {0};
    SSL *c = NULL, *s = SRV(SSL_new(sctx));
    BIO *sb = NULL, *cb = NULL;
    int rc = -1;
    if (!s || meshtls_tls_client_ssl_new(cctx, &c, &err) != 0 || !BIO_new_bio_pair(&sb, 0, &cb, 0))
        goto out;
    SRV((SSL_set_bio(s, sb, sb), 0));
    SSL_set_bio(c, cb, cb);
    sb = cb = NULL;
    SRV((SSL_set_accept_state(s), 0));
    SSL_set_connect_state(c);
    if (resume)
        SSL_set_session(c, resume);
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                goto out;
        }
        if (!sdone) {
            int r = SRV(SSL_do_handshake(s));
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                goto out;
        }
    }
    if (!(cdone && sdone))
        goto out;
    char msg[32], in[32];
    memset(msg, 'x', sizeof(msg));
    if (SSL_write(c, msg, 32) != 32 || SRV(SSL_read(s, in, 32)) != 32 ||
        SRV(SSL_write(s, in, 32)) != 32 || SSL_read(c, in, 32) != 32)
        goto out;
    rc = SSL_session_reused(c) ? 1 : 0;
    SSL_shutdown(c);
    SRV(SSL_shutdown(s));
    SRV(SSL_shutdown(s)); /* reads the client's close_notify */
    *next = SSL_get1_session(c);
out:
    if (rc < 0)
        ERR_print_errors_fp(stderr);
    if (s)
        SRV((SSL_free(s), 0));
    SSL_free(c);
    BIO_free(sb);
    BIO_free(cb);
    return rc;
}

struct cfg {
    const char *name;
    int session_cache, verify_cache, tickets, resume;
};

static const struct cfg CFGS[] = {
    {"proxy-default", 1, 1, 0, 1},    {"no-verify-cache", 1, 0, 0, 1},
    {"no-session-cache", 0, 1, 0, 1}, {"no-caches", 0, 0, 0, 1},
    {"no-caches-1tkt", 0, 0, 1, 1},   {"no-tickets", 0, 0, -1, 0},
};

static int cmp_dbl(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* floor-mimalloc is this file linked with mimalloc, as the meshtls command is (bench/Makefile) */
#ifndef FLOOR_ALLOC
#define FLOOR_ALLOC ""
#endif

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: floor SERVER.crt SERVER.key CLIENT.crt CLIENT.key CA.crt "
                        "[-n N] [-r RUNS] [-w SECONDS] [-o CONFIG] [-L 1]\n");
        return 2;
    }
    int n = 400, runs = 7;
    double budget = 120;
    const char *only = NULL;
    int legacy_ec = 0;
    for (int i = 6; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-w"))
            budget = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-o"))
            only = argv[i + 1];
        else if (!strcmp(argv[i], "-L") && !strcmp(argv[i + 1], "1"))
            legacy_ec = 1;
    }
    if (legacy_ec) { /* as `meshtls proxy` runs by default (meshtls_tls_use_legacy_ec) */
        struct meshtls_err lerr = {0};
        if (meshtls_tls_use_legacy_ec(&lerr) != 0) {
            fprintf(stderr, "floor: %s\n", lerr.msg);
            return 1;
        }
    }
    if (n < 1 || n > 1000000 || runs < 1 || runs > 101) {
        fprintf(stderr, "floor: -n 1..1000000, -r 1..101\n");
        return 2;
    }
    double t_end = wall() + budget;
    printf("| server-side setting (%s) | full µs | resumed µs | runs × handshakes |\n",
           OpenSSL_version(OPENSSL_VERSION));
    printf("| --- | ---: | ---: | ---: |\n");
    for (size_t k = 0; k < sizeof(CFGS) / sizeof(CFGS[0]); k++) {
        const struct cfg *cf = &CFGS[k];
        if (only && strcmp(only, cf->name))
            continue;
        struct meshtls_err err = {0};
        struct meshtls_tls_opts so = {.cert_file = argv[1],
                                      .key_file = argv[2],
                                      .ca_file = argv[5],
                                      .num_tickets = cf->tickets};
        struct meshtls_tls_opts co = {.cert_file = argv[3],
                                      .key_file = argv[4],
                                      .ca_file = argv[5],
                                      .server_name = "localhost"};
        if (cf->session_cache && meshtls_session_cache_new(20000, 300, &so.session_cache)) {
            fprintf(stderr, "floor: session cache\n");
            return 1;
        }
        if (cf->verify_cache && meshtls_verify_cache_new(10000, &so.verify_cache)) {
            fprintf(stderr, "floor: verify cache\n");
            return 1;
        }
        SSL_CTX *sctx = NULL, *cctx = NULL;
        if (meshtls_tls_server_ctx_new(&so, &sctx, &err) ||
            meshtls_tls_client_ctx_new(&co, &cctx, &err)) {
            fprintf(stderr, "floor: %s\n", err.msg);
            return 1;
        }
        /* what src/proxy/engine.c px_tls_build() adds */
        SSL_CTX_set_mode(sctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(sctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_read_ahead(sctx, 1);
        SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);

        double full[101], res[101];
        int nr = 0, bad = 0, notres = 0;
        /* warm-up: caches filled as a long-running proxy would have them */
        SSL_SESSION *sess = NULL, *nx = NULL;
        if (one_conn(sctx, cctx, NULL, &nx) < 0)
            bad++;
        SSL_SESSION_free(nx);
        for (int r = 0; r < runs && wall() < t_end; r++) {
            server_us = 0;
            int done = 0;
            for (int i = 0; i < n; i++) {
                nx = NULL;
                if (one_conn(sctx, cctx, NULL, &nx) < 0)
                    bad++;
                else
                    done++;
                SSL_SESSION_free(sess);
                sess = nx;
            }
            full[nr] = done ? server_us / done : 0;
            res[nr] = 0;
            if (cf->resume && sess) {
                server_us = 0, done = 0;
                for (int i = 0; i < n; i++) {
                    nx = NULL;
                    int rc = one_conn(sctx, cctx, sess, &nx);
                    if (rc < 0)
                        bad++;
                    else
                        done++, notres += rc == 0;
                    if (nx) {
                        SSL_SESSION_free(sess);
                        sess = nx;
                    }
                }
                res[nr] = done ? server_us / done : 0;
            }
            nr++;
        }
        SSL_SESSION_free(sess);
        double fs[101], rs[101];
        memcpy(fs, full, sizeof(double) * (size_t)nr);
        memcpy(rs, res, sizeof(double) * (size_t)nr);
        qsort(fs, (size_t)nr, sizeof(double), cmp_dbl);
        qsort(rs, (size_t)nr, sizeof(double), cmp_dbl);
        char rbuf[64] = "–";
        if (cf->resume && nr)
            snprintf(rbuf, sizeof(rbuf), "%.0f (%.0f..%.0f)", rs[nr / 2], rs[0], rs[nr - 1]);
        printf("| %s%s%s | %.0f (%.0f..%.0f) | %s | %d × %d%s%s |\n", cf->name, FLOOR_ALLOC,
               legacy_ec ? " + legacy EC" : "", nr ? fs[nr / 2] : 0, nr ? fs[0] : 0,
               nr ? fs[nr - 1] : 0, rbuf, nr, n, bad ? " FAILURES" : "",
               notres ? " (some not resumed)" : "");
        fflush(stdout);
        SSL_CTX_free(sctx);
        SSL_CTX_free(cctx);
        meshtls_session_cache_free(so.session_cache);
        meshtls_verify_cache_free(so.verify_cache);
    }
    return 0;
}
