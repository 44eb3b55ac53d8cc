/*
 * router_run.c - `meshtls proxy router`: opens and migrates the database, builds the TLS
 * context (several CA files trusted at once), runs the engine with the router protocol
 * (router.c) and, optionally, the status listener (/healthz, /readyz, /metrics, as the
 * proxy's), starts the database watcher (router_watch.c), and on the main thread waits for
 * signals: SIGHUP, or a change of the --crl file, re-reads the TLS files (certificate, key,
 * CAs, CRL) for new connections and has live relays check their certificate against the
 * new CRL; SIGTERM/SIGINT drain.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/x509.h>

#include "http_net.h"
#include "meshtls/log.h"
#include "meshtls/x509.h"
#include "proxy.h"
#include "router.h"

/*
 * A revoked leaf completes the handshake on the router (issue 11 section 3: a revoked
 * certificate gets its `ERROR: revoked` line, not a TLS alert the user cannot read), and
 * only on the router: the library's verify callback, which the proxy server keeps, refuses
 * it.  The wrapper below lets through exactly X509_V_ERR_CERT_REVOKED at depth 0 and marks
 * the SSL; every other failure (an expired or untrusted chain, a revoked intermediate) goes
 * to the library's callback, which still fails the handshake.  OpenSSL goes on checking
 * after an accepted error, so a leaf that is revoked AND broken otherwise is still refused.
 */
static int ctx_cb_idx = -1, ssl_revoked_idx = -1;
static pthread_once_t revoked_once = PTHREAD_ONCE_INIT;

static void revoked_index_init(void)
{
    ctx_cb_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_revoked_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int router_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    SSL_CTX *ctx = ssl ? SSL_get_SSL_CTX(ssl) : NULL;
    SSL_verify_cb lib = NULL;
    void *as_data = ctx ? SSL_CTX_get_ex_data(ctx, ctx_cb_idx) : NULL;
    if (as_data)
        memcpy(&lib, &as_data, sizeof(lib));
    if (!ok && ssl && X509_STORE_CTX_get_error(sctx) == X509_V_ERR_CERT_REVOKED &&
        X509_STORE_CTX_get_error_depth(sctx) == 0 &&
        SSL_set_ex_data(ssl, ssl_revoked_idx, (void *)1) == 1)
        return 1; /* marked: router.c answers `ERROR: revoked` and never relays */
    return lib ? lib(ok, sctx) : ok;
}

int rt_tls_leaf_revoked(SSL *ssl)
{
    return ssl_revoked_idx >= 0 && SSL_get_ex_data(ssl, ssl_revoked_idx) != NULL;
}

static int revoked_hook(SSL_CTX *ctx, struct meshtls_err *err)
{
    if (pthread_once(&revoked_once, revoked_index_init) != 0 || ctx_cb_idx < 0 ||
        ssl_revoked_idx < 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM,
                               "out of memory for the router's TLS verification state");
    /* the function pointer travels as data: POSIX guarantees the round trip */
    SSL_verify_cb lib = SSL_CTX_get_verify_callback(ctx);
    void *as_data;
    memcpy(&as_data, &lib, sizeof(as_data));
    if (SSL_CTX_set_ex_data(ctx, ctx_cb_idx, as_data) != 1)
        return meshtls_err_set(err, MESHTLS_ENOMEM,
                               "out of memory for the router's TLS verification state");
    SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), router_verify_cb);
    return 0;
}

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
    if ((rc = revoked_hook(ctx, err)) != 0) {
        SSL_CTX_free(ctx);
        return rc;
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

static double flushes_value(void *arg)
{
    return (double)atomic_load((atomic_ullong *)arg);
}

static double lim_syncs_value(void *arg)
{
    return (double)atomic_load(&((struct rt_limits *)arg)->syncs);
}

static double lim_peers_value(void *arg)
{
    return (double)atomic_load(&((struct rt_limits *)arg)->peers);
}

static int metrics_setup(atomic_ullong *flushes, struct rt_limits *lim, struct meshtls_err *err)
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
                          "1 if the watcher's last read of the database (every 250 ms) answered.",
                          NULL, &f, err);
    if (rc == 0)
        rc = mt_series_fn(f, NULL, db_up_value, NULL, err);
    if (rc == 0)
        rc = mt_counter_new(px_metrics.reg, "meshtls_router_relays_cut_total",
                            "Live relays closed because the grant went away (grant) or the "
                            "certificate was revoked (revoked).",
                            MT_LIST("reason"), &f, err);
    if (rc == 0)
        rc = mt_series_get(f, MT_LIST("grant"), &rt_metrics.cut_grant, err);
    if (rc == 0)
        rc = mt_series_get(f, MT_LIST("revoked"), &rt_metrics.cut_revoked, err);
    if (rc == 0)
        rc = mt_counter_new(px_metrics.reg, "meshtls_router_cache_invalidations_total",
                            "Decision cache flushes for a change in the database.", NULL, &f, err);
    if (rc == 0)
        rc = mt_series_fn(f, NULL, flushes_value, flushes, err);
    /* limits shared with the other routers (docs/ROUTER.md "Limits") */
    if (rc == 0)
        rc = mt_counter_new(px_metrics.reg, "meshtls_router_limit_syncs_total",
                            "Rounds (every 250 ms) that published this router's limit counts "
                            "and read the other routers'.",
                            NULL, &f, err);
    if (rc == 0)
        rc = mt_series_fn(f, NULL, lim_syncs_value, lim, err);
    if (rc == 0)
        rc = mt_gauge_new(px_metrics.reg, "meshtls_router_limit_peers",
                          "Other live routers on the database whose counts the limits add (0: "
                          "this router counts alone).",
                          NULL, &f, err);
    if (rc == 0)
        rc = mt_series_fn(f, NULL, lim_peers_value, lim, err);
    return rc;
}

static void metrics_clear(void)
{
    memset(rt_metrics.decisions, 0, sizeof(rt_metrics.decisions));
    rt_metrics.decision_time = rt_metrics.relays = NULL;
    rt_metrics.cut_grant = rt_metrics.cut_revoked = NULL;
}

static void snap_destroy(struct mt_snap *b)
{
    struct rt_snap *s = (struct rt_snap *)b;
    SSL_CTX_free(s->base.ctx);
    sk_X509_CRL_pop_free(s->crls, X509_CRL_free);
    free(s);
}

/* The TLS context and, with --crl, the CRLs again (read here for live relays: the context's
 * store is OpenSSL's, not to be walked from other threads). */
static int snap_build(const struct rt_config *cfg, struct mt_snap **out, struct meshtls_err *err)
{
    struct rt_snap *s = calloc(1, sizeof(*s));
    if (!s)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    mt_snap_init(&s->base, snap_destroy);
    int rc = rt_tls_build(cfg, &s->base.ctx, &s->base.not_after, err);
    if (rc == 0 && cfg->tls.crl_file)
        rc = meshtls_pem_read_crls(cfg->tls.crl_file, &s->crls, err);
    if (rc) {
        mt_snap_release(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}

int rt_crl_revoked(STACK_OF(X509_CRL) * crls, X509 *cert, char *serial, size_t cap)
{
    if (!crls || !cert)
        return 0;
    const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
    const X509_NAME *issuer = X509_get_issuer_name(cert);
    for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        X509_REVOKED *rev = NULL;
        /* 1: listed; 2: listed as removeFromCRL, i.e. no longer revoked */
        if (X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer) != 0 ||
            X509_CRL_get0_by_serial(crl, &rev, sn) != 1)
            continue;
        if (serial && cap) {
            BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
            char *hex = bn ? BN_bn2hex(bn) : NULL;
            snprintf(serial, cap, "%s", hex ? hex : "?");
            OPENSSL_free(hex);
            BN_free(bn);
        }
        return 1;
    }
    return 0;
}

/* What the CRL file looks like now: a reload happens when this changes. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int ok;
};

static struct file_id file_id_of(const char *path)
{
    struct stat sb;
    struct file_id f = {0};
    if (path && stat(path, &sb) == 0)
        f = (struct file_id){sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtim, 1};
    return f;
}

static int file_id_eq(const struct file_id *a, const struct file_id *b)
{
    return a->ok == b->ok && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* SIGHUP, or the CRL file changed: new TLS files for new connections, and live relays
 * check their certificate against the new CRLs (rt_live.crl_gen). */
static void reload(const struct rt_config *cfg, struct mt_snap_holder *holder, struct rt_live *live,
                   const char *why)
{
    struct mt_snap *s = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    if (snap_build(cfg, &s, &e) != 0) {
        meshtls_log(MESHTLS_LOG_ERROR, "reload (%s) failed, keeping the current: %s", why, e.msg);
        return;
    }
    mt_snap_publish(holder, s);
    atomic_fetch_add(&live->crl_gen, 1);
    meshtls_log(MESHTLS_LOG_INFO, "reload (%s): new TLS context in service%s", why,
                cfg->tls.crl_file ? "; live relays checked against the new CRL" : "");
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
    struct meshtls_verify_cache *vcache = NULL;
    struct rt_watch watch;
    memset(&watch, 0, sizeof(watch));
    struct rt_live live;
    memset(&live, 0, sizeof(live));
    live.snaps = &holder;
    r.live = &live;
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
    /* before the engine: the watcher is the readiness ping and the cache's invalidation */
    if ((rc = rt_watch_start(&watch, cfg->store_url, r.cache, &live, &lim, err)) != 0)
        goto out;
    /* TLS session resumption across every context a reload builds (stateful, as the
     * proxy's): a returning user skips the full handshake; the cache is stamped with the
     * trust (CA files, CRL), so a new CRL never resumes an old session */
    struct rt_config tcfg = *cfg;
    if (meshtls_session_cache_new(20000, 300, &scache) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the session cache");
        goto out;
    }
    tcfg.tls.session_cache = scache;
    /* the verified-chain cache, as the proxy server's (docs/PROXY.md): a returning user's
     * full handshake skips X509_verify_cert (1.85 M of the router's 5.9 M instructions per
     * full connection without it); emptied when the CA files or the CRL change.  A revoked
     * leaf is still caught after every handshake by the look-up in the current CRLs. */
    if (meshtls_verify_cache_new(10000, &vcache) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the verification cache");
        goto out;
    }
    tcfg.tls.verify_cache = vcache;
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
    if ((rc = px_metrics_init((unsigned)cfg->workers, err)) != 0 ||
        (rc = metrics_setup(&watch.flushes, &lim, err)) != 0)
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
        meshtls_log_announce("status", mt_listener_addr(sl));
    }
    if ((rc = mt_engine_start(eng, err)) != 0)
        goto out;
    atomic_store(&px_metrics.listening, 1);
    meshtls_log(MESHTLS_LOG_INFO,
                "router listening on %s, issuer %s, database %s (%s), %d worker(s), %d job "
                "thread(s)",
                mt_listener_addr(l), cfg->issuer, mt_db_url_safe(r.db), mt_db_backend_name(r.db),
                cfg->workers, cfg->job_threads);
    meshtls_log_announce("listening", mt_listener_addr(l));
    struct file_id crl_seen = file_id_of(cfg->tls.crl_file);

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
        /* a new CRL file is taken without a signal (checked every 250 ms: a stat) */
        struct file_id crl_now = file_id_of(cfg->tls.crl_file);
        int crl_moved = cfg->tls.crl_file && crl_now.ok && !file_id_eq(&crl_now, &crl_seen);
        crl_seen = crl_now;
        if (sig == SIGHUP || crl_moved)
            reload(cfg, &holder, &live, sig == SIGHUP ? "SIGHUP" : "the CRL file changed");
    }
    atomic_store(&px_metrics.listening, 0);
    long long left = 0;
    if (!mt_engine_drain(eng, cfg->shutdown_timeout_ms, &left))
        meshtls_log(MESHTLS_LOG_WARN, "shutdown timeout: closing %lld connection(s)", left);
    rc = 0;
out:
    atomic_store(&px_metrics.listening, 0);
    mt_engine_free(eng);
    rt_watch_stop(&watch);  /* after the engine: the cache outlives neither */
    rt_connlog_stop(&clog); /* after the engine: no worker pushes any more */
    rt_limits_free(&lim);
    rt_cache_free(&cache);
    meshtls_session_cache_free(scache);
    meshtls_verify_cache_free(vcache);
    px_status_free(&status);
    px_metrics.lstats = NULL;
    px_metrics.snap = NULL;
    metrics_clear();
    px_metrics_fini();
    mt_snap_holder_clear(&holder);
    mt_db_close(r.db);
    return rc;
}
