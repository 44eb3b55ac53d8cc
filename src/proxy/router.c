/*
 * router.c - the protocol of `meshtls proxy router` on the shared engine (docs/ROUTER.md):
 * after the TLS handshake, the client certificate's SPIFFE ID must name a user of the
 * configured issuer; the client sends `<connect_id>\n`; a job looks the host up and decides
 * (the database never runs on an event loop); the router connects to the host, answers
 * `OK\n` and relays both ways (pipe.c, the proxy's relay loop), or answers one of the fixed
 * `ERROR: <code> <message>\n` lines and closes.
 *
 * Sub-states in the engine's MT_CONN_PROTO (struct rt_conn.sub):
 *   RT_S_LINE     reading the connect-id line (deadline: line_timeout_ms); a revoked
 *                 certificate (let through the handshake by router_run.c's verify
 *                 callback) waits here too, then gets `ERROR: revoked` and never relays
 *   RT_S_AUTHZ    a job decides (deadline: authz_timeout_ms; past it the answer is
 *                 authz-unavailable and the job's late result is dropped)
 *   RT_S_CONNECT  non-blocking connect() to the host (deadline: connect_timeout_ms)
 *   RT_S_RELAY    copying bytes both ways (idle deadline: idle_timeout_ms)
 * Every state has a deadline, so every path ends with an answer in bounded time.
 *
 * Live relays are re-checked on their own worker, never from another thread: their deadline
 * comes every RT_LIVE_TICK_MS, and the tick compares the generations of struct rt_live
 * (moved by the database watcher and by CRL reloads) with the ones the relay last checked:
 * a data change submits a new decision (a job), a new CRL is looked up at once.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "meshtls/log.h"
#include "meshtls/tls.h"
#include "pipe.h"
#include "proxy.h"
#include "router.h"

struct rt_metrics rt_metrics;

enum rt_sub { RT_S_HS = 0, RT_S_LINE, RT_S_AUTHZ, RT_S_CONNECT, RT_S_RELAY, RT_S_DONE };

struct rt_job;

/* The router's state of one connection (the engine's proto area). */
struct rt_conn {
    enum rt_sub sub;
    struct px_pipe pipe;
    struct mt_linebuf *lb; /* only while reading the line */
    struct rt_job *job;    /* the decision in flight, or NULL */
    char *who;             /* the SPIFFE ID, for the logs */
    char *org, *user, *connect_id, *target;
    const char *result; /* "ok" or the ERROR code name (static) */
    const char *why;
    int64_t line_us; /* when the line was complete (decision time starts) */
    int64_t decision_us;
    int64_t start_unix_ms; /* wall clock at the handshake's end, for the connection log */
    int session;           /* counted in the limits: released on close */
    int64_t next_check_ms; /* RT_S_RELAY: when the grant is checked again (monotonic) */
    int64_t last_active_ms;
    unsigned long long last_bytes;
    int64_t next_recheck_ms; /* RT_S_RELAY: the periodic grant check (--recheck-interval) */
    uint64_t data_gen;       /* rt_live.data_gen when the grant was last decided */
    uint64_t crl_gen;        /* rt_live.crl_gen when the certificate was last checked */
    X509 *cert;              /* the client's certificate (for CRL reloads) */
    char *revoked;           /* the serial of a revoked certificate: answer RT_REVOKED */
};

/* One decision: filled on the event loop, `work` runs on a pool thread. */
struct rt_job {
    struct mt_job j;
    struct mt_db *db;
    char org[RT_ID_MAX + 1], user[RT_ID_MAX + 1], cid[RT_CONNECT_ID_MAX + 1];
    int rc; /* the database failed */
    char err[1024];
    struct rt_lookup res;
    struct sockaddr_storage sa;
    socklen_t salen;
    struct rt_cache *cache;
    int stale_max_ms;
    int stale;          /* the database failed; answered from the cache */
    int recheck;        /* a live relay's periodic check, not a new decision */
    uint64_t cache_gen; /* the cache's generation before the lookup (rt_cache_put) */
};

static inline struct rt_conn *R(struct mt_conn *c)
{
    return mt_conn_proto(c);
}

static inline const struct rt_router *RT(const struct mt_conn *c)
{
    return mt_conn_listener_arg(c);
}

static void audit(struct mt_conn *c, enum rt_code code, const char *reason)
{
    struct rt_conn *p = R(c);
    if (rt_metrics.decisions[code])
        mt_counter_add(rt_metrics.decisions[code], mt_conn_shard(c), 1);
    if (p->line_us && rt_metrics.decision_time)
        mt_histogram_observe(rt_metrics.decision_time, mt_conn_shard(c),
                             (double)p->decision_us / 1e6);
    MESHTLS_LOG_EVENT(code == RT_OK ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN, "audit",
                      MESHTLS_LF_S("action", "route"),
                      MESHTLS_LF_S("decision", code == RT_OK ? "allow" : "deny"),
                      MESHTLS_LF_S("code", rt_code_name(code)), MESHTLS_LF_U("conn", c->id),
                      MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("id", p->who),
                      MESHTLS_LF_S("org", p->org), MESHTLS_LF_S("user", p->user),
                      MESHTLS_LF_S("connect_id", p->connect_id), MESHTLS_LF_S("target", p->target),
                      MESHTLS_LF_D("decision_ms", (double)p->decision_us / 1000.0),
                      MESHTLS_LF_S("reason", reason));
}

/*
 * Answer `code`'s fixed line and close.  What the client sent beyond what we read is
 * drained first (bounded), so the close does not reset the connection under the answer.
 */
static void refuse(struct mt_conn *c, enum rt_code code, const char *reason)
{
    struct rt_conn *p = R(c);
    p->result = rt_code_name(code);
    p->why = reason;
    p->sub = RT_S_DONE;
    audit(c, code, reason);
    px_count(PX_C_DENY, mt_conn_shard(c), 1);
    char junk[4096];
    for (int i = 0; i < 16 && c->down.rd_ready && mt_end_read(&c->down, junk, sizeof(junk)) > 0;
         i++)
        ;
    const char *line = rt_code_line(code);
    (void)mt_end_write(&c->down, line, strlen(line));
    mt_conn_close_clean(c, reason);
}

/* A revoked certificate: `ERROR: revoked`, with its serial in the audit line. */
static void refuse_revoked(struct mt_conn *c)
{
    char why[160];
    snprintf(why, sizeof(why), "the client certificate (serial %s) is revoked (--crl)",
             R(c)->revoked);
    refuse(c, RT_REVOKED, why);
}

static void on_close(struct mt_conn *c, const char *why)
{
    struct rt_conn *p = R(c);
    if (why && !p->why)
        p->why = why;
    int64_t dur = mt_now_us() - c->start_us;
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "close", MESHTLS_LF_U("conn", c->id),
                      MESHTLS_LF_S("client", c->peer_addr), MESHTLS_LF_S("id", p->who),
                      MESHTLS_LF_S("connect_id", p->connect_id), MESHTLS_LF_S("target", p->target),
                      MESHTLS_LF_S("result", p->result ? p->result : "-"),
                      MESHTLS_LF_U("bytes_up", p->pipe.bytes[0]),
                      MESHTLS_LF_U("bytes_down", p->pipe.bytes[1]),
                      MESHTLS_LF_D("duration_ms", (double)dur / 1000.0),
                      MESHTLS_LF_S("reason", p->why ? p->why : "done"));
    px_count(PX_C_BYTES_UP, mt_conn_shard(c), p->pipe.bytes[0]);
    px_count(PX_C_BYTES_DOWN, mt_conn_shard(c), p->pipe.bytes[1]);
    if (RT(c)->log && p->who) { /* connections past the handshake */
        struct rt_logentry le = {
            .at_ms = p->start_unix_ms,
            .org = p->org,
            .user = p->user,
            .connect_id = p->connect_id,
            .client = c->peer_addr,
            .target = p->target,
            .result = p->result ? p->result : "closed",
            .reason = p->why ? p->why : "done",
            .bytes_up = p->pipe.bytes[0],
            .bytes_down = p->pipe.bytes[1],
            .duration_ms = dur / 1000,
            .decision_us = p->decision_us,
        };
        rt_connlog_push(RT(c)->log, &le);
    }
    px_pipe_release(c, &p->pipe);
    if (p->session)
        rt_limits_release(RT(c)->limits, p->org, p->user);
    if (p->sub == RT_S_RELAY && rt_metrics.relays)
        mt_gauge_add(rt_metrics.relays, mt_conn_shard(c), -1);
    free(p->lb);
    free(p->who);
    free(p->org);
    free(p->user);
    free(p->connect_id);
    free(p->target);
    X509_free(p->cert);
    p->cert = NULL;
    free(p->revoked);
    p->revoked = NULL;
    p->lb = NULL, p->who = p->org = p->user = p->connect_id = p->target = NULL;
    /* p->job, if any, is freed by its done function (which runs before the free) */
}

/* TCP keepalive on a socket: a peer that vanished (no FIN) is noticed in about two
 * minutes, not hours, on both the client's and the host's side. */
static void keepalive(int fd)
{
    int one = 1, idle = 60, intvl = 15, cnt = 4;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static int on_accept(struct mt_conn *c)
{
    keepalive(c->down.fd);
    return 0;
}

static void step_line(struct mt_conn *c);
static int relay_tick(const struct mt_conn *c);
static int relay_step(struct mt_conn *c);

/*
 * Whether the client's certificate is revoked: marked by the router's verify callback
 * (router_run.c: the handshake let it through for this answer), or listed in the current
 * CRLs, for a resumed session, which skips verification.  @param serial gets its serial.
 */
static int leaf_revoked(struct mt_conn *c, SSL *ssl, char *serial, size_t cap)
{
    struct rt_conn *p = R(c);
    struct rt_live *lv = RT(c)->live;
    int revoked = 0;
    if (lv && p->cert) {
        struct rt_snap *s = (struct rt_snap *)mt_snap_acquire(lv->snaps);
        revoked = s && rt_crl_revoked(s->crls, p->cert, serial, cap);
        mt_snap_release(s ? &s->base : NULL);
    }
    return revoked || rt_tls_leaf_revoked(ssl);
}

static void on_tls_done(struct mt_conn *c, struct mt_end *t)
{
    struct rt_conn *p = R(c);
    const struct rt_router *r = RT(c);
    px_metrics_handshake((double)(mt_now_us() - c->start_us) / 1e6, mt_conn_shard(c));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    p->start_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    struct meshtls_identity *id = NULL;
    char org[RT_ID_MAX + 1], user[RT_ID_MAX + 1];
    struct meshtls_err e = MESHTLS_ERR_INIT;
    if (meshtls_tls_peer_identity(t->ssl, &id, &e) == 0)
        p->who = strdup(id->spiffe_id ? id->spiffe_id : id->subject ? id->subject : "-");
    p->cert = SSL_get1_peer_certificate(t->ssl);
    char serial[80] = "-";
    int revoked = leaf_revoked(c, t->ssl, serial, sizeof(serial));
    int rc = id ? rt_identity_parse(id->spiffe_id, r->cfg->issuer, org, user, &e)
                : meshtls_err_set(&e, MESHTLS_EINVAL, "no client certificate");
    if (rc == 0 && id && id->n_uris != 1)
        rc = meshtls_err_set(&e, MESHTLS_EINVAL, "the certificate has %zu URI SANs, not one",
                             id->n_uris);
    meshtls_identity_free(id);
    if (rc != 0 && !revoked) {
        refuse(c, RT_BAD_IDENTITY, e.msg);
        return;
    }
    if (revoked && !(p->revoked = strdup(serial))) {
        mt_conn_close(c, "out of memory");
        return;
    }
    /* a revoked certificate that names no user is logged without org and user, like a
     * refused identity */
    if (rc == 0) {
        p->org = strdup(org);
        p->user = strdup(user);
    }
    p->lb = calloc(1, sizeof(*p->lb));
    if ((rc == 0 && (!p->org || !p->user)) || !p->lb) {
        mt_conn_close(c, "out of memory");
        return;
    }
    p->sub = RT_S_LINE;
    mt_conn_set_proto(c);
    mt_conn_set_timeout(c, r->cfg->line_timeout_ms);
    /* OpenSSL may hold the line already, read with the handshake */
    c->down.rd_ready = 1;
    step_line(c);
}

static void on_tls_error(struct mt_conn *c, struct mt_end *t, int timeout)
{
    struct rt_conn *p = R(c);
    if (timeout) {
        px_count_hs_error(PX_HSE_TIMEOUT, mt_conn_shard(c));
        p->why = "TLS handshake timeout";
        return;
    }
    char msg[MESHTLS_ERR_MSG_MAX], *serial = NULL;
    px_handshake_failed(c, t, 0, &p->who, &serial, msg, sizeof(msg)); /* counts and logs */
    free(serial);
    p->why = "TLS handshake failed";
}

/* ---- the decision: a job ------------------------------------------------------------ */

static void job_work(struct mt_job *j)
{
    struct rt_job *rj = (struct rt_job *)j;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    rj->cache_gen = rt_cache_gen(rj->cache);
    rj->rc = rt_db_lookup(rj->db, rj->cid, rj->org, rj->user, &rj->res, &e);
    if (rj->rc) {
        struct rt_cached cv;
        if (rt_cache_get(rj->cache, rj->org, rj->user, rj->cid, mt_now_ms(), rj->stale_max_ms,
                         &cv)) {
            /* the database fails: a verdict younger than --stale-max still answers */
            rj->rc = 0;
            rj->stale = 1;
            rj->res.code = cv.code;
            memcpy(rj->res.addr, cv.addr, sizeof(cv.addr));
            memcpy(rj->res.via, cv.via, sizeof(cv.via));
            rj->sa = cv.sa;
            rj->salen = cv.salen;
            return;
        }
        snprintf(rj->err, sizeof(rj->err), "%.600s", e.msg);
        return;
    }
    if (rj->res.code == RT_OK) {
        rj->salen = sizeof(rj->sa);
        if (mt_resolve(rj->res.addr, 0, &rj->sa, &rj->salen, &e) != 0) {
            rj->res.code = RT_BACKEND_UNAVAILABLE;
            snprintf(rj->err, sizeof(rj->err), "cannot resolve %.300s: %.600s", rj->res.addr,
                     e.msg);
        }
    } else if (rj->res.code == RT_BACKEND_UNAVAILABLE) {
        snprintf(rj->err, sizeof(rj->err), "the host's internal_ip_addr is not host[:port]");
    }
    if (rj->res.code == RT_OK || rj->res.code == RT_NOT_FOUND || rj->res.code == RT_FORBIDDEN) {
        struct rt_cached cv = {.code = rj->res.code, .sa = rj->sa, .salen = rj->salen};
        memcpy(cv.addr, rj->res.addr, sizeof(cv.addr));
        memcpy(cv.via, rj->res.via, sizeof(cv.via));
        rt_cache_put(rj->cache, rj->org, rj->user, rj->cid, mt_now_ms(), rj->cache_gen, &cv);
    }
}

static void start_connect(struct mt_conn *c, const struct sockaddr_storage *sa, socklen_t salen);

/*
 * A live relay whose grant went away (`serial` NULL; `code` the new verdict) or whose
 * certificate is now revoked (`serial` its serial): audit, count, close.
 */
static void cut(struct mt_conn *c, enum rt_code code, const char *serial)
{
    struct rt_conn *p = R(c);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "audit", MESHTLS_LF_S("action", "recheck"),
                      MESHTLS_LF_S("decision", "deny"),
                      MESHTLS_LF_S("code", serial ? "revoked" : rt_code_name(code)),
                      MESHTLS_LF_U("conn", c->id), MESHTLS_LF_S("id", p->who),
                      MESHTLS_LF_S("org", p->org), MESHTLS_LF_S("user", p->user),
                      MESHTLS_LF_S("connect_id", p->connect_id), MESHTLS_LF_S("serial", serial),
                      MESHTLS_LF_S("reason", serial ? "the certificate was revoked: relay closed"
                                                    : "the grant was removed: relay closed"));
    struct mt_series *m = serial ? rt_metrics.cut_revoked : rt_metrics.cut_grant;
    if (m)
        mt_counter_add(m, mt_conn_shard(c), 1);
    p->result = "revoked";
    mt_conn_close_clean(c, serial ? "the certificate was revoked during the relay"
                                  : "the grant was removed during the relay");
}

/* The verdict, from a job or the cache: refuse, or count the session and connect. */
static void verdict(struct mt_conn *c, enum rt_code code, const char *addr, const char *via,
                    const struct sockaddr_storage *sa, socklen_t salen, const char *err)
{
    struct rt_conn *p = R(c);
    p->decision_us = mt_now_us() - p->line_us;
    free(p->target);
    p->target = addr && addr[0] ? strdup(addr) : NULL;
    if (code != RT_OK) {
        refuse(c, code,
               err && err[0]          ? err
               : code == RT_NOT_FOUND ? "no such connect id in the user's organisation"
               : code == RT_FORBIDDEN ? "the user is not granted this host"
                                      : "refused");
        return;
    }
    enum rt_code lc = rt_limits_acquire(RT(c)->limits, p->org, p->user);
    if (lc != RT_OK) {
        refuse(c, lc, "open sessions over the limit");
        return;
    }
    p->session = 1;
    audit(c, RT_OK, via);
    px_count(PX_C_ALLOW, mt_conn_shard(c), 1);
    start_connect(c, sa, salen);
}

static void job_done(struct mt_job *j)
{
    struct rt_job *rj = (struct rt_job *)j;
    struct mt_conn *c = j->c;
    struct rt_conn *p = R(c);
    if (p->job == rj)
        p->job = NULL;
    if (rj->recheck) {
        if (!mt_conn_closed(c) && p->sub == RT_S_RELAY && !rj->rc && rj->res.code != RT_OK)
            cut(c, rj->res.code, NULL);
        /* the database failing keeps live relays: only new decisions fail closed */
        free(rj);
        return;
    }
    if (mt_conn_closed(c) || p->sub != RT_S_AUTHZ) { /* answered already (timeout) */
        free(rj);
        return;
    }
    if (rj->rc) {
        p->decision_us = mt_now_us() - p->line_us;
        refuse(c, RT_AUTHZ_UNAVAILABLE, rj->err);
    } else {
        if (rj->stale)
            MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "stale", MESHTLS_LF_U("conn", c->id),
                              MESHTLS_LF_S("connect_id", p->connect_id),
                              MESHTLS_LF_S("reason", "the database failed: answered from the "
                                                     "cache (within --stale-max)"));
        verdict(c, rj->res.code, rj->res.addr, rj->res.via, &rj->sa, rj->salen, rj->err);
    }
    free(rj);
}

static void submit(struct mt_conn *c, int recheck)
{
    struct rt_conn *p = R(c);
    struct rt_job *rj = calloc(1, sizeof(*rj));
    if (!rj) {
        mt_conn_close(c, "out of memory");
        return;
    }
    rj->j.work = job_work;
    rj->j.done = job_done;
    rj->db = RT(c)->db;
    rj->cache = RT(c)->cache;
    rj->stale_max_ms = RT(c)->cfg->stale_max_ms;
    snprintf(rj->org, sizeof(rj->org), "%s", p->org);
    snprintf(rj->user, sizeof(rj->user), "%s", p->user);
    snprintf(rj->cid, sizeof(rj->cid), "%s", p->connect_id);
    rj->recheck = recheck;
    if (!recheck) {
        p->sub = RT_S_AUTHZ;
        p->line_us = mt_now_us();
        mt_conn_set_timeout(c, RT(c)->cfg->authz_timeout_ms);
    }
    if (mt_job_submit(c, &rj->j) != 0) {
        free(rj);
        if (!recheck)
            refuse(c, RT_BUSY, "the job queue is full");
        return;
    }
    p->job = rj;
}

static void step_line(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    enum mt_line_result lr = mt_conn_read_line(c, p->lb, RT_CONNECT_ID_MAX + 2);
    if (lr == MT_LINE_AGAIN)
        return;
    if (lr == MT_LINE_EOF || lr == MT_LINE_ERROR) {
        p->result = "closed";
        mt_conn_close(c, p->revoked ? "a revoked certificate's client closed before its answer"
                                    : "the client closed before sending a connect id");
        return;
    }
    char cid[RT_CONNECT_ID_MAX + 1];
    if (p->revoked) { /* answered once the line is in, so the close does not reset it */
        if (lr == MT_LINE_DONE && rt_connect_id_check(p->lb->buf, p->lb->len - 1, cid) == RT_OK)
            p->connect_id = strdup(cid); /* for the logs only */
        refuse_revoked(c);
        return;
    }
    if (lr == MT_LINE_TOO_LONG || rt_connect_id_check(p->lb->buf, p->lb->len - 1, cid) != RT_OK) {
        refuse(c, RT_BAD_REQUEST,
               lr == MT_LINE_TOO_LONG ? "the connect id line is too long"
                                      : "the connect id line has characters not allowed");
        return;
    }
    if (!(p->connect_id = strdup(cid))) {
        mt_conn_close(c, "out of memory");
        return;
    }
    enum rt_code lc = rt_limits_attempt(RT(c)->limits, p->org, p->user, mt_conn_now_ms(c));
    if (lc != RT_OK) {
        refuse(c, lc, "connection attempts over the limit");
        return;
    }
    /* read before deciding: a change from here on makes the relay check again */
    if (RT(c)->live)
        p->data_gen = atomic_load(&RT(c)->live->data_gen);
    struct rt_cached cv;
    if (rt_cache_get(RT(c)->cache, p->org, p->user, p->connect_id, mt_now_ms(),
                     RT(c)->cfg->cache_ttl_ms, &cv)) {
        p->line_us = mt_now_us();
        p->sub = RT_S_AUTHZ;
        verdict(c, cv.code, cv.addr, cv.via, &cv.sa, cv.salen, NULL);
        return;
    }
    submit(c, 0);
}

/* ---- the host ------------------------------------------------------------------- */

static void start_connect(struct mt_conn *c, const struct sockaddr_storage *sa, socklen_t salen)
{
    struct rt_conn *p = R(c);
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        refuse(c, RT_BACKEND_UNAVAILABLE, "cannot create a socket");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    keepalive(fd);
    c->up.fd = fd;
    if (connect(fd, (const struct sockaddr *)sa, salen) != 0 && errno != EINPROGRESS) {
        refuse(c, RT_BACKEND_UNAVAILABLE, strerror(errno));
        return;
    }
    if (mt_conn_watch(c, &c->up) != 0) {
        mt_conn_close(c, "epoll_ctl failed");
        return;
    }
    p->sub = RT_S_CONNECT;
    mt_conn_set_timeout(c, RT(c)->cfg->connect_timeout_ms);
}

static int step_connect(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    if (!c->up.wr_ready)
        return 0;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr == EINPROGRESS || soerr == EALREADY)
        return 0;
    if (soerr != 0) {
        px_count(PX_C_BACKEND_ERR, mt_conn_shard(c), 1);
        refuse(c, RT_BACKEND_UNAVAILABLE, strerror(soerr));
        return 0;
    }
    /* OK first, then whatever the client sent after its line goes to the host */
    if (!(p->pipe.buf[1] = mt_buf_get(c))) {
        mt_conn_close(c, "out of memory");
        return 0;
    }
    memcpy(p->pipe.buf[1], "OK\n", 3);
    p->pipe.off[1] = 0, p->pipe.len[1] = 3;
    size_t extra = p->lb->have - p->lb->len;
    if (extra) {
        if (!(p->pipe.buf[0] = mt_buf_get(c))) {
            mt_conn_close(c, "out of memory");
            return 0;
        }
        memcpy(p->pipe.buf[0], p->lb->buf + p->lb->len, extra);
        p->pipe.off[0] = 0, p->pipe.len[0] = extra;
        p->pipe.bytes[0] += extra;
    }
    free(p->lb);
    p->lb = NULL;
    p->result = "ok";
    p->sub = RT_S_RELAY;
    if (rt_metrics.relays)
        mt_gauge_add(rt_metrics.relays, mt_conn_shard(c), 1);
    p->last_active_ms = mt_conn_now_ms(c);
    p->next_check_ms = p->last_active_ms + relay_tick(c);
    p->next_recheck_ms = p->last_active_ms + RT(c)->cfg->recheck_ms;
    mt_conn_set_timeout(c, relay_tick(c));
    c->down.rd_ready = c->down.wr_ready = c->up.rd_ready = c->up.wr_ready = 1;
    return relay_step(c);
}

/*
 * The relay's deadline is the next look at the generations (RT_LIVE_TICK_MS), the next
 * grant check (--recheck-interval) or the idle timeout, whichever comes first: the pipe
 * re-arms it with the time left, so steady traffic does not push the check away.
 */
static int relay_tick(const struct mt_conn *c)
{
    const struct rt_config *cfg = RT(c)->cfg;
    int t = cfg->idle_timeout_ms;
    if (cfg->recheck_ms > 0 && cfg->recheck_ms < t)
        t = cfg->recheck_ms;
    if (RT(c)->live && RT_LIVE_TICK_MS < t)
        t = RT_LIVE_TICK_MS;
    return t;
}

/* A new CRL since the last look: is this relay's certificate on it?  (Worker thread; the
 * snapshot's CRLs are immutable.) */
static int crl_cut(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    struct rt_live *lv = RT(c)->live;
    uint64_t g = lv ? atomic_load(&lv->crl_gen) : 0;
    if (!lv || g == p->crl_gen)
        return 0;
    p->crl_gen = g;
    struct rt_snap *s = (struct rt_snap *)mt_snap_acquire(lv->snaps);
    char serial[80];
    int revoked = s && rt_crl_revoked(s->crls, p->cert, serial, sizeof(serial));
    mt_snap_release(s ? &s->base : NULL);
    if (revoked)
        cut(c, RT_BAD_IDENTITY, serial);
    return revoked;
}

static int relay_step(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    int64_t left = p->next_check_ms - mt_conn_now_ms(c);
    return px_pipe_step(c, &p->pipe, NULL, left > 1 ? (int)left : 1);
}

static void relay_timeout(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    const struct rt_config *cfg = RT(c)->cfg;
    int64_t now = mt_conn_now_ms(c);
    unsigned long long total = p->pipe.bytes[0] + p->pipe.bytes[1];
    if (total != p->last_bytes) {
        p->last_bytes = total;
        p->last_active_ms = now;
    }
    if (now - p->last_active_ms >= cfg->idle_timeout_ms) {
        mt_conn_close_clean(c, "idle timeout");
        return;
    }
    p->next_check_ms = now + relay_tick(c);
    mt_conn_set_timeout(c, relay_tick(c));
    if (crl_cut(c))
        return;
    uint64_t g = RT(c)->live ? atomic_load(&RT(c)->live->data_gen) : 0;
    int periodic = cfg->recheck_ms > 0 && now >= p->next_recheck_ms;
    /* a check in flight may have read the old data: the next tick asks again */
    if ((!periodic && g == p->data_gen) || p->job)
        return;
    uint64_t was = p->data_gen;
    p->data_gen = g;
    if (cfg->recheck_ms > 0)
        p->next_recheck_ms = now + cfg->recheck_ms;
    struct rt_cached cv;
    if (rt_cache_get(RT(c)->cache, p->org, p->user, p->connect_id, mt_now_ms(), cfg->cache_ttl_ms,
                     &cv)) {
        if (cv.code != RT_OK)
            cut(c, cv.code, NULL);
        return;
    }
    submit(c, 1);
    if (!p->job && !mt_conn_closed(c))
        p->data_gen = was; /* the job queue was full: try again at the next tick */
}

static int on_io(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    switch (p->sub) {
    case RT_S_LINE: step_line(c); return 0;
    case RT_S_CONNECT: return step_connect(c);
    case RT_S_RELAY: return relay_step(c);
    default: return 0; /* the decision runs; client bytes wait in the socket */
    }
}

static void on_timeout(struct mt_conn *c)
{
    struct rt_conn *p = R(c);
    switch (p->sub) {
    case RT_S_LINE:
        if (p->revoked)
            refuse_revoked(c);
        else
            refuse(c, RT_TIMEOUT, "no connect id line in time");
        break;
    case RT_S_AUTHZ:
        p->decision_us = mt_now_us() - p->line_us;
        refuse(c, RT_AUTHZ_UNAVAILABLE, "the database did not answer in time");
        break;
    case RT_S_CONNECT:
        px_count(PX_C_BACKEND_ERR, mt_conn_shard(c), 1);
        refuse(c, RT_BACKEND_UNAVAILABLE, "timeout connecting to the host");
        break;
    case RT_S_RELAY: relay_timeout(c); break;
    default: mt_conn_close_clean(c, "idle timeout"); break;
    }
}

const struct mt_proto_ops rt_router_ops = {
    .name = "router",
    .proto_size = sizeof(struct rt_conn),
    .on_accept = on_accept,
    .on_tls_done = on_tls_done,
    .on_tls_error = on_tls_error,
    .on_io = on_io,
    .on_timeout = on_timeout,
    .on_close = on_close,
};
