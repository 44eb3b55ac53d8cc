/*
 * status.c - the status listener of `meshtls proxy`: /healthz, /readyz and /metrics
 * over plain HTTP/1.1 (src/http), as a second listener on the proxy's engine.  On
 * loopback by default: it is for probes and Prometheus.  A slow client holds only its
 * own connection (the engine's loops and the HTTP layer's time bounds), never the
 * others.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_net.h"
#include "meshtls/log.h"
#include "proxy.h"

/* Listening, and our certificate still valid?  When not, why (naming the certificate and
 * the fix) into `why`.  @return 1 if ready. */
static int ready(char *why, size_t cap)
{
    if (!atomic_load(&px_metrics.listening)) {
        snprintf(why, cap, "not ready: not listening\n");
        return 0;
    }
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    const struct px_snap *ps = (const struct px_snap *)s;
    int ok = s && s->ctx && s->not_after > (int64_t)time(NULL);
    if (!s || !s->ctx) {
        snprintf(why, cap, "not ready: no TLS context\n");
    } else if (!ok) {
        char when[32] = "?";
        time_t na = (time_t)s->not_after;
        struct tm tm;
        if (gmtime_r(&na, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(why, cap,
                 "not ready: our certificate %s (%s) expired at %s: peers refuse it; renew "
                 "the file (the proxy reloads it when it changes, or on SIGHUP)\n",
                 ps->cert_file ? ps->cert_file : "(none)", ps->self_desc, when);
    }
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

/*
 * Readiness follows the target, as ghostunnel's backend_ok: when /readyz is asked (at most
 * one check a second; results in between are reused), a TCP connect to the current
 * snapshot's target bounded by 1 s, run in a job (never on a worker).  Checking on demand,
 * not on a timer, keeps a proxy nobody probes from knocking on its backend every few
 * seconds.  A change is logged once.
 */
struct target_check {
    struct mt_job job;
    struct mt_http_req *req;
    struct px_snap *snap; /* a reference, released in done */
    int up, err;
};

static _Atomic int64_t last_check_ms; /* when the last check ended */

static void check_work(struct mt_job *j)
{
    struct target_check *t = (struct target_check *)j;
    const struct px_snap *s = t->snap;
    int fd = socket(s->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        t->err = errno;
        return;
    }
    if (connect(fd, (const struct sockaddr *)&s->target, s->target_len) == 0) {
        t->up = 1;
    } else if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        socklen_t sl = sizeof(t->err);
        if (poll(&p, 1, 1000) != 1)
            t->err = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &t->err, &sl) != 0)
            t->err = errno;
        t->up = t->err == 0;
    } else {
        t->err = errno;
    }
    close(fd);
}

static void reply_ready(struct mt_http_req *req)
{
    char why[600];
    if (!ready(why, sizeof(why))) {
        mt_http_reply(req, 503, "text/plain", why, strlen(why));
    } else if (!atomic_load(&px_metrics.target_up)) {
        static const char b[] = "not ready: the target does not answer\n";
        mt_http_reply(req, 503, "text/plain", b, sizeof(b) - 1);
    } else {
        mt_http_reply(req, 200, "text/plain", "ok\n", 3);
    }
}

static void check_done(struct mt_job *j)
{
    struct target_check *t = (struct target_check *)j;
    atomic_store(&last_check_ms, mt_now_ms());
    if (atomic_exchange(&px_metrics.target_up, t->up) != t->up) {
        if (t->up)
            meshtls_log(MESHTLS_LOG_INFO, "target %s answers again: ready", t->snap->target_name);
        else
            meshtls_log(MESHTLS_LOG_WARN,
                        "target %s does not answer (%s): /readyz says not ready until it does",
                        t->snap->target_name, strerror(t->err ? t->err : ECONNREFUSED));
    }
    reply_ready(t->req); /* frees a request whose connection went away */
    mt_snap_release(&t->snap->base);
    free(t);
}

static int readyz(struct mt_http_req *req, void *arg)
{
    (void)arg;
    struct mt_conn *c = mt_http_req_conn(req);
    struct target_check *t = NULL;
    char why[600];
    if (!ready(why, sizeof(why)) || mt_now_ms() - atomic_load(&last_check_ms) < 1000 || !c ||
        !px_metrics.snap || !(t = calloc(1, sizeof(*t)))) {
        reply_ready(req);
        return MT_HTTP_DONE;
    }
    t->req = req;
    t->snap = (struct px_snap *)mt_snap_acquire(px_metrics.snap);
    t->job.work = check_work;
    t->job.done = check_done;
    if (!t->snap || mt_job_submit(c, &t->job) != 0) {
        mt_snap_release(t->snap ? &t->snap->base : NULL);
        free(t);
        reply_ready(req); /* the queue is full: the last result stands */
        return MT_HTTP_DONE;
    }
    return MT_HTTP_ASYNC;
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
