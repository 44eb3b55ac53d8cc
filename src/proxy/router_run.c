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

#include "http_net.h"
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

/* ---- status: /healthz (listening, certificate valid), /readyz (and the database answers),
 * /metrics (the proxy's families plus meshtls_router_*) ---------------------------------- */

static int live(void)
{
    if (!atomic_load(&px_metrics.listening))
        return 0;
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    int ok = s && s->ctx && s->not_after > (int64_t)time(NULL);
    mt_snap_release(s);
    return ok;
}

static int st_health(struct mt_http_req *req, void *arg)
{
    int need_db = arg != NULL;
    if (!live()) {
        static const char b[] = "not ready: not listening or certificate expired\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    } else if (need_db && !atomic_load(&rt_metrics.db_up)) {
        static const char b[] = "not ready: the database does not answer\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    } else {
        mt_http_reply(req, 200, "text/plain", "ok\n", 3);
    }
    return MT_HTTP_DONE;
}

static int st_metrics(struct mt_http_req *req, void *arg)
{
    (void)arg;
    char *body = NULL;
    size_t n = 0;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    if (px_metrics_render(&body, &n, &e) != 0) {
        mt_http_reply_error(req, 500, "metrics_unavailable", e.msg);
        return MT_HTTP_DONE;
    }
    mt_http_reply(req, 200, "text/plain; version=0.0.4", body, n);
    free(body);
    return MT_HTTP_DONE;
}

static int status_setup(struct px_status *st, struct meshtls_err *err)
{
    memset(&st->http, 0, sizeof(st->http));
    if (!(st->router = mt_http_router_new()))
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the status routes");
    static int with_db = 1;
    int rc;
    if ((rc = mt_http_route_add(st->router, "GET", "/healthz", st_health, NULL, err)) != 0 ||
        (rc = mt_http_route_add(st->router, "GET", "/readyz", st_health, &with_db, err)) != 0 ||
        (rc = mt_http_route_add(st->router, "GET", "/metrics", st_metrics, NULL, err)) != 0) {
        px_status_free(st);
        return rc;
    }
    st->http.router = st->router;
    mt_http_limits_default(&st->http.limits);
    st->http.limits.max_head = 8192;
    st->http.limits.max_body = 1024;
    st->http.limits.head_ms = 2000;
    st->http.limits.idle_ms = 10000;
    st->http.write_timeout_ms = 5000;
    return 0;
}

static double db_up_value(void *arg)
{
    (void)arg;
    return atomic_load(&rt_metrics.db_up) ? 1.0 : 0.0;
}

static int metrics_setup(struct meshtls_err *err)
{
    static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,    0.1,    0.25,  1,      3};
    struct mt_family *f = NULL;
    int rc = mt_counter_new(px_metrics.reg, "meshtls_router_decisions_total",
                            "Router answers by code (ok, not-found, forbidden, ...).",
                            MT_LIST("code"), &f, err);
    for (int i = 0; rc == 0 && i < RT_CODE_N; i++)
        rc =
            mt_series_get(f, MT_LIST(rt_code_name((enum rt_code)i)), &rt_metrics.decisions[i], err);
    if (rc == 0)
        rc = mt_histogram_new(px_metrics.reg, "meshtls_router_decision_duration_seconds",
                              "From the connect-id line to the verdict (database included).", NULL,
                              bounds, sizeof(bounds) / sizeof(bounds[0]), &f, err);
    if (rc == 0)
        rc = mt_series_get(f, NULL, &rt_metrics.decision_time, err);
    if (rc == 0)
        rc = mt_gauge_new(px_metrics.reg, "meshtls_router_relays_active",
                          "Connections relaying to a host.", NULL, &f, err);
    if (rc == 0)
        rc = mt_series_get(f, NULL, &rt_metrics.relays, err);
    if (rc == 0)
        rc = mt_gauge_new(px_metrics.reg, "meshtls_router_database_up",
                          "1 if the last database ping (every second) answered.", NULL, &f, err);
    if (rc == 0)
        rc = mt_series_fn(f, NULL, db_up_value, NULL, err);
    return rc;
}

static void metrics_clear(void)
{
    memset(rt_metrics.decisions, 0, sizeof(rt_metrics.decisions));
    rt_metrics.decision_time = rt_metrics.relays = NULL;
}

/* The database pinger: readiness, once a second, off the event loops. */
struct pinger {
    pthread_t t;
    struct mt_db *db;
    struct rt_cache *cache;
    atomic_int stop;
    int started;
};

static void *ping_loop(void *arg)
{
    struct pinger *pg = arg;
    int64_t seen = -1;
    while (!atomic_load(&pg->stop)) {
        struct meshtls_err e = MESHTLS_ERR_INIT;
        int64_t v = -1;
        int up = rt_db_version(pg->db, &v, &e) == 0;
        if (up != atomic_exchange(&rt_metrics.db_up, up))
            meshtls_log(up ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN, "database %s: %s%s",
                        mt_db_url_safe(pg->db),
                        up ? "answers again" : "does not answer: ", up ? "" : e.msg);
        if (up && v != seen) {
            if (seen >= 0) { /* `meshtls router` changed the data: no stale verdict */
                rt_cache_clear(pg->cache);
                meshtls_log(MESHTLS_LOG_DEBUG,
                            "router data changed (version %lld): decision "
                            "cache cleared",
                            (long long)v);
            }
            seen = v;
        }
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    return NULL;
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
    struct meshtls_session_cache *scache = NULL;
    struct pinger pg = {0};
    struct rt_connlog clog;
    memset(&clog, 0, sizeof(clog));
    struct rt_limits lim;
    memset(&lim, 0, sizeof(lim));
    struct rt_cache cache;
    memset(&cache, 0, sizeof(cache));

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

    if (cfg->connlog) {
        if ((rc = rt_connlog_start(&clog, r.db, 10000, err)) != 0)
            goto out;
        r.log = &clog;
    }
    if ((rc = rt_limits_init(&lim, &cfg->limits)) != 0) {
        rc = meshtls_err_set(err, rc, "out of memory for the limits");
        goto out;
    }
    r.limits = &lim;
    if ((cfg->cache_ttl_ms > 0 || cfg->stale_max_ms > 0) && rt_cache_init(&cache) == 0)
        r.cache = &cache;
    /* TLS session resumption across every context a reload builds (stateful, as the
     * proxy's): a returning user skips the full handshake; the cache is stamped with the
     * trust (CA files, CRL), so a new CRL never resumes an old session */
    struct rt_config tcfg = *cfg;
    if (meshtls_session_cache_new(20000, 300, &scache) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the session cache");
        goto out;
    }
    tcfg.tls.session_cache = scache;
    cfg = &tcfg;
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
    if ((rc = px_metrics_init((unsigned)cfg->workers, err)) != 0 || (rc = metrics_setup(err)) != 0)
        goto out;
    atomic_store(&rt_metrics.db_up, 1); /* it answered the migration just now */
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
        if ((rc = status_setup(&status, err)) != 0 ||
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
    pg.db = r.db;
    pg.cache = r.cache;
    if (pthread_create(&pg.t, NULL, ping_loop, &pg) == 0)
        pg.started = 1;
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
        int64_t now_ms = mt_now_ms();
        static int64_t last_sweep;
        if (now_ms - last_sweep >= 1000) {
            rt_limits_sweep(&lim, now_ms);
            last_sweep = now_ms;
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
    if (pg.started) {
        atomic_store(&pg.stop, 1);
        pthread_join(pg.t, NULL);
    }
    mt_engine_free(eng);
    rt_connlog_stop(&clog); /* after the engine: no worker pushes any more */
    rt_limits_free(&lim);
    rt_cache_free(&cache);
    meshtls_session_cache_free(scache);
    px_status_free(&status);
    px_metrics.lstats = NULL;
    px_metrics.snap = NULL;
    metrics_clear();
    px_metrics_fini();
    mt_snap_holder_clear(&holder);
    mt_db_close(r.db);
    return rc;
}
