/*
 * status.c - the status listener of `meshtls proxy`: /healthz, /readyz and /metrics
 * over plain HTTP/1.1 (src/http), as a second listener on the proxy's engine.  On
 * loopback by default: it is for probes and Prometheus.  A slow client holds only its
 * own connection (the engine's loops and the HTTP layer's time bounds), never the
 * others.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_net.h"
#include "meshtls/log.h"
#include "proxy.h"

/* Listening, and our certificate still valid? */
static int ready(void)
{
    if (!atomic_load(&px_metrics.listening))
        return 0;
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    int ok = s && s->ctx && s->not_after > (int64_t)time(NULL);
    mt_snap_release(s);
    return ok;
}

/* Liveness: the process serves (listening).  A target that is down is not a reason to
 * restart the proxy. */
static int healthz(struct mt_http_req *req, void *arg)
{
    (void)arg;
    if (atomic_load(&px_metrics.listening)) {
        mt_http_reply(req, 200, "text/plain", "ok\n", 3);
    } else {
        static const char b[] = "not listening\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    }
    return MT_HTTP_DONE;
}

/* Readiness: listening, our certificate valid, and the target answering. */
static int readyz(struct mt_http_req *req, void *arg)
{
    (void)arg;
    if (!ready()) {
        static const char b[] = "not ready: not listening or our certificate expired\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    } else if (!atomic_load(&px_metrics.target_up)) {
        static const char b[] = "not ready: the target does not answer\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    } else {
        mt_http_reply(req, 200, "text/plain", "ok\n", 3);
    }
    return MT_HTTP_DONE;
}

static int metrics(struct mt_http_req *req, void *arg)
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

int px_status_setup(struct px_status *st, struct meshtls_err *err)
{
    memset(&st->http, 0, sizeof(st->http));
    if (!(st->router = mt_http_router_new()))
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the status routes");
    int rc;
    if ((rc = mt_http_route_add(st->router, "GET", "/healthz", healthz, NULL, err)) != 0 ||
        (rc = mt_http_route_add(st->router, "GET", "/readyz", readyz, NULL, err)) != 0 ||
        (rc = mt_http_route_add(st->router, "GET", "/metrics", metrics, NULL, err)) != 0) {
        px_status_free(st);
        return rc;
    }
    st->http.router = st->router;
    mt_http_limits_default(&st->http.limits);
    /* probes and scrapes: small requests, no bodies, short patience */
    st->http.limits.max_head = 8192;
    st->http.limits.max_body = 1024;
    st->http.limits.head_ms = 2000;
    st->http.limits.idle_ms = 10000;
    st->http.write_timeout_ms = 5000;
    return 0;
}

void px_status_free(struct px_status *st)
{
    mt_http_router_free(st->router);
    st->router = NULL;
}
