/*
 * router_run.c - `meshtls proxy router`: opens and migrates the database, builds the TLS
 * context (several CA files trusted at once), runs the engine with the router protocol
 * (router.c) and, optionally, the status listener (/healthz, /readyz, /metrics, as the
 * proxy's), and on the main thread waits for signals: SIGHUP re-reads the TLS files
 * (certificate, key, CAs, CRL) for new connections; SIGTERM/SIGINT drain.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "meshtls/log.h"
#include "proxy.h"
#include "router.h"

int rt_tls_build(const struct rt_config *cfg, SSL_CTX **out, int64_t *not_after,
                 struct meshtls_err *err)
{
    SSL_CTX *ctx = NULL;
    int rc = meshtls_tls_server_ctx_new(&cfg->tls, &ctx, err);
    if (rc)
        return rc;
    /* CA rotation: the other bundles join the same store */
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    for (size_t i = 1; i < cfg->n_ca_files; i++) {
        if (X509_STORE_load_file(st, cfg->ca_files[i]) != 1) {
            SSL_CTX_free(ctx);
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "--cacert %s: no CA certificate could be read from it "
                                   "(PEM expected)",
                                   cfg->ca_files[i]);
        }
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, MT_BUF + 4 * 256);
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

static void snap_destroy(struct mt_snap *s)
{
    SSL_CTX_free(s->ctx);
    free(s);
}

static int snap_build(const struct rt_config *cfg, struct mt_snap **out, struct meshtls_err *err)
{
    struct mt_snap *s = calloc(1, sizeof(*s));
    if (!s)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    mt_snap_init(s, snap_destroy);
    int rc = rt_tls_build(cfg, &s->ctx, &s->not_after, err);
    if (rc) {
        mt_snap_release(s);
        return rc;
    }
    *out = s;
    return 0;
}

int rt_run(const struct rt_config *cfg, struct meshtls_err *err)
{
    int rc = 0;
    struct px_status status = {0};
    struct mt_snap_holder status_snap = MT_SNAP_HOLDER_INIT;
    struct mt_snap_holder holder = MT_SNAP_HOLDER_INIT;
    struct mt_engine *eng = NULL;
    struct mt_listener *l = NULL, *sl = NULL;
    struct rt_router r = {.cfg = cfg};

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the pool: one connection per job thread; waits bounded below the decision's deadline */
    struct mt_db_opts dbo = {
        .pool_size = cfg->job_threads,
        .acquire_timeout_ms = cfg->authz_timeout_ms,
        .connect_timeout_s = cfg->authz_timeout_ms / 1000 > 0 ? cfg->authz_timeout_ms / 1000 : 1,
    };
    if ((rc = mt_db_open(cfg->store_url, &dbo, &r.db, err)) != 0 ||
        (rc = rt_db_migrate(r.db, err)) != 0)
        goto out;

    struct mt_snap *first = NULL;
    if ((rc = snap_build(cfg, &first, err)) != 0)
        goto out;
    mt_snap_publish(&holder, first);

    struct mt_engine_opts eo = {.workers = cfg->workers, .job_threads = cfg->job_threads};
    struct mt_listener_opts lo = {
        .name = "router",
        .addr = cfg->listen,
        .ops = &rt_router_ops,
        .arg = &r,
        .snap = &holder,
        .tls = 1,
        .max_conns = cfg->max_conns,
        .handshake_timeout_ms = cfg->handshake_timeout_ms,
    };
    if ((rc = mt_engine_new(&eo, &eng, err)) != 0 ||
        (rc = mt_engine_listen(eng, &lo, &l, err)) != 0) {
        if (rc == MESHTLS_EIO)
            rc = meshtls_err_set(err, rc, "--listen %s: %s", cfg->listen, strerror(errno));
        goto out;
    }
    if ((rc = px_metrics_init((unsigned)cfg->workers, err)) != 0)
        goto out;
    px_metrics.lstats = mt_listener_stats(l);
    px_metrics.snap = &holder;
    if (cfg->status) {
        struct mt_listener_opts so = {
            .name = "status",
            .addr = cfg->status,
            .ops = &mt_http_proto,
            .arg = &status.http,
            .snap = &status_snap,
            .max_conns = 64,
            .drain_close = 1,
        };
        if ((rc = px_status_setup(&status, err)) != 0 ||
            (rc = mt_engine_listen(eng, &so, &sl, err)) != 0) {
            if (rc == MESHTLS_EIO)
                rc = meshtls_err_set(err, rc, "--status %s: %s", cfg->status, strerror(errno));
            goto out;
        }
        printf("status on %s\n", mt_listener_addr(sl));
        fflush(stdout);
    }
    if ((rc = mt_engine_start(eng, err)) != 0)
        goto out;
    atomic_store(&px_metrics.listening, 1);
    meshtls_log(MESHTLS_LOG_INFO,
                "router listening on %s, issuer %s, database %s (%s), %d worker(s), %d job "
                "thread(s)",
                mt_listener_addr(l), cfg->issuer, mt_db_url_safe(r.db), mt_db_backend_name(r.db),
                cfg->workers, cfg->job_threads);
    printf("listening on %s\n", mt_listener_addr(l));
    fflush(stdout);

    for (;;) {
        struct timespec to = {.tv_sec = 0, .tv_nsec = 250 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &to);
        if (sig == SIGTERM || sig == SIGINT) {
            meshtls_log(MESHTLS_LOG_INFO, "%s: draining for up to %d ms",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->shutdown_timeout_ms);
            break;
        }
        if (sig == SIGHUP) {
            struct mt_snap *s = NULL;
            struct meshtls_err e = MESHTLS_ERR_INIT;
            if (snap_build(cfg, &s, &e) == 0) {
                mt_snap_publish(&holder, s);
                meshtls_log(MESHTLS_LOG_INFO, "reload (SIGHUP): new TLS context in service");
            } else {
                meshtls_log(MESHTLS_LOG_ERROR, "reload (SIGHUP) failed, keeping the current: %s",
                            e.msg);
            }
        }
    }
    atomic_store(&px_metrics.listening, 0);
    long long left = 0;
    if (!mt_engine_drain(eng, cfg->shutdown_timeout_ms, &left))
        meshtls_log(MESHTLS_LOG_WARN, "shutdown timeout: closing %lld connection(s)", left);
    rc = 0;
out:
    atomic_store(&px_metrics.listening, 0);
    mt_engine_free(eng);
    px_status_free(&status);
    px_metrics.lstats = NULL;
    px_metrics.snap = NULL;
    px_metrics_fini();
    mt_snap_holder_clear(&holder);
    mt_db_close(r.db);
    return rc;
}
