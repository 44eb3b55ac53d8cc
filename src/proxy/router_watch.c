/*
 * router_watch.c - the watcher: the one thread that hears of database changes, so that a
 * removed grant refuses new connects within a second and cuts live relays within two
 * (docs/ROUTER.md, "Invalidation").
 *
 * It holds its own handle with one connection (never one of the job threads'), listening
 * through src/db's change notification:
 *   PostgreSQL  LISTEN meshtls_router: the triggers of migration 4 (backend_hosts, teams,
 *               users, router_changes) notify at commit, whichever client wrote;
 *   SQLite      PRAGMA data_version, polled every 25 ms; it moves on any commit (the
 *               connection log's too), so the change counter that the triggers and the
 *               `meshtls router` commands move decides whether the data changed.
 * Every tick (WATCH_TICK_MS) it also reads the change counter: that is the readiness ping
 * (rt_metrics.db_up) and the fallback for a PostgreSQL database whose tables could not get
 * the trigger.  On a change it empties the decision cache and moves live->data_gen on;
 * each live relay sees that on its own worker within RT_LIVE_TICK_MS and checks its grant
 * again.  A lost connection is reconnected; as notifications may have been missed
 * meanwhile, the first answer after it counts as a change.  While the database is down
 * nothing is flushed: the cache answers within --stale-max, as documented.
 *
 * Limits (docs/ROUTER.md, "Limits"): every tick the same thread also shares this router's
 * counts with the other routers on the database (lim_tick): it writes its heartbeat and the
 * counts that changed to router_limit_counts, reads the other live routers' sums when any of
 * them wrote, and swaps them into the limits (rt_limits_set_others).  Only this thread talks
 * to the database for it; the check on the event loop reads memory.  The database down: the
 * last sums are kept for RT_LIM_KEEP_MS, then dropped (each router limits alone), and put
 * back by the first round that succeeds.
 *
 * Blocking: this thread only (database calls, bounded waits); never an event loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "meshtls/log.h"
#include "router.h"

#define WATCH_TICK_MS 250
#define LIM_FORGET_EVERY 240 /* rounds between two clean-ups of dead routers' rows (a minute) */
#define LIM_FORGET_MS 60000  /* a router silent this long is deleted from the tables */

/* Flush: no stale verdict is answered, and relays check again. */
static void changed(struct rt_watch *w, const char *what)
{
    rt_cache_clear(w->cache);
    atomic_fetch_add(&w->live->data_gen, 1);
    atomic_fetch_add(&w->flushes, 1);
    meshtls_log(MESHTLS_LOG_DEBUG,
                "router data changed (%s): decision cache cleared, live relays re-checked", what);
}

static void set_up(struct rt_watch *w, int up, const char *why)
{
    if (up != atomic_exchange(&rt_metrics.db_up, up))
        meshtls_log(up ? MESHTLS_LOG_INFO : MESHTLS_LOG_WARN, "database %s: %s%s",
                    mt_db_url_safe(w->db),
                    up ? "answers again" : "does not answer: ", up ? "" : why);
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One round of sharing: publish what changed (everything after a failure), then read the
 * others' sums if any of them wrote since the last read. */
static int lim_sync(struct rt_watch *w, struct mt_db_conn *c, int64_t now, struct meshtls_err *e)
{
    struct rt_limits *l = w->limits;
    struct rt_lim_row *rows = NULL;
    size_t n = 0;
    int resync = w->lim_resync;
    if (rt_limits_changes(l, now, resync, &rows, &n) != 0)
        return meshtls_err_set(e, MESHTLS_ENOMEM, "out of memory for the limits' changes");
    int64_t seq = w->lim_seq + (n || resync ? 1 : 0);
    int rc = rt_db_lim_publish(c, w->router_id, seq, rows, n, resync, e);
    free(rows);
    if (rc) {
        /* what the database has from us is unknown now: write all of it next round */
        rt_limits_unpublish(l);
        w->lim_resync = 1;
        return rc;
    }
    w->lim_seq = seq;
    w->lim_resync = 0;
    uint64_t fp = 0;
    size_t live = 0;
    if ((rc = rt_db_lim_instances(c, w->router_id, RT_LIM_EXPIRE_MS, &fp, &live, e)) != 0)
        return rc;
    atomic_store(&l->peers, (int)live);
    if (!w->lim_read || fp != w->lim_fp) {
        struct rt_lim_others *o = NULL;
        if (live && (rc = rt_db_lim_read(c, w->router_id, RT_LIM_EXPIRE_MS, &o, e)) != 0)
            return rc;
        rt_lim_others_free(rt_limits_set_others(l, o));
        w->lim_fp = fp;
        w->lim_read = 1;
    }
    if (++w->lim_rounds % LIM_FORGET_EVERY == 0) {
        struct meshtls_err fe = MESHTLS_ERR_INIT;
        if (rt_db_lim_forget(c, NULL, LIM_FORGET_MS, &fe) != 0)
            meshtls_log(MESHTLS_LOG_DEBUG, "limits: dead routers' rows not deleted: %s", fe.msg);
    }
    return 0;
}

/* Share the limits' counts once per tick; `c` NULL: the database is unreachable. */
static void lim_tick(struct rt_watch *w, struct mt_db_conn *c)
{
    struct rt_limits *l = w->limits;
    int64_t now = mt_now_ms();
    if (!rt_limits_on(l) || now < w->lim_next)
        return;
    w->lim_next = now + WATCH_TICK_MS;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = c ? lim_sync(w, c, now, &e)
               : meshtls_err_set(&e, MESHTLS_ESTORE, "the database does not answer");
    if (rc == 0) {
        atomic_fetch_add(&l->syncs, 1);
        w->lim_ok_ms = now;
        if (w->lim_state != RT_LIM_SHARED)
            meshtls_log(MESHTLS_LOG_INFO,
                        "limits: shared through database %s as router %s (%d other router(s) "
                        "counted)",
                        mt_db_url_safe(w->db), w->router_id, atomic_load(&l->peers));
        w->lim_state = RT_LIM_SHARED;
        return;
    }
    if (w->lim_state == RT_LIM_SHARED) {
        meshtls_log(MESHTLS_LOG_WARN,
                    "limits: cannot share counts through database %s: %s; the other routers' "
                    "last counts stay in use for %d ms, then each limit counts this router alone",
                    mt_db_url_safe(w->db), e.msg, RT_LIM_KEEP_MS);
        w->lim_state = RT_LIM_KEEPING;
    }
    if (w->lim_state == RT_LIM_KEEPING && !rt_lim_keep_others(now - w->lim_ok_ms, RT_LIM_KEEP_MS)) {
        rt_lim_others_free(rt_limits_set_others(l, NULL));
        atomic_store(&l->peers, 0);
        w->lim_read = 0;
        meshtls_log(MESHTLS_LOG_WARN,
                    "limits: no count from the other routers for %d ms: every limit now counts "
                    "this router's sessions and attempts alone, until the database answers (%s)",
                    RT_LIM_KEEP_MS, e.msg);
        w->lim_state = RT_LIM_LOCAL;
    }
}

/* How long the next wait for a change may be: up to the tick, less when limits are due. */
static int wait_ms(const struct rt_watch *w)
{
    if (!rt_limits_on(w->limits))
        return WATCH_TICK_MS;
    int64_t left = w->lim_next - mt_now_ms();
    return left <= 0 ? 0 : left > WATCH_TICK_MS ? WATCH_TICK_MS : (int)left;
}

static void *watch_loop(void *arg)
{
    struct rt_watch *w = arg;
    int pg = mt_db_backend(w->db) == MT_DB_POSTGRES;
    struct mt_db_conn *c = w->conn; /* listening since rt_watch_start, or NULL */
    int64_t seen = w->seen;
    int missed = !c; /* the connection was lost: a change may have gone unheard */
    while (!atomic_load(&w->stop)) {
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (!c && (mt_db_acquire(w->db, &c, &e) != 0 || mt_db_listen(c, RT_DB_CHANNEL, &e) != 0)) {
            mt_db_release(c);
            c = NULL;
            set_up(w, 0, e.msg);
            missed = 1;
            lim_tick(w, NULL);
            pause_ms(WATCH_TICK_MS);
            continue;
        }
        char payload[64];
        int got = mt_db_wait_change(c, wait_ms(w), payload, sizeof(payload), &e);
        int64_t v = -1;
        if (got < 0 || rt_db_version_conn(c, &v, &e) != 0) {
            mt_db_release(c); /* the pool resets a broken PostgreSQL session on acquire */
            c = NULL;
            set_up(w, 0, e.msg);
            missed = 1;
            lim_tick(w, NULL);
            pause_ms(WATCH_TICK_MS);
            continue;
        }
        /* PostgreSQL: every notification is a change; fold what else is queued into it */
        int flush = pg && got == 1;
        while (flush && mt_db_wait_change(c, 0, NULL, 0, NULL) == 1)
            ;
        if (seen >= 0 && v != seen)
            flush = 1;
        if (missed)
            flush = 1;
        if (flush)
            changed(w, pg && got == 1 ? payload : missed ? "reconnected" : "change counter");
        seen = v;
        missed = 0;
        set_up(w, 1, NULL); /* after the flush: "ready" means no verdict from before a gap */
        lim_tick(w, c);
    }
    /* a clean stop: the other routers stop counting this one's sessions at once */
    if (c && rt_limits_on(w->limits)) {
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (rt_db_lim_forget(c, w->router_id, 0, &e) != 0)
            meshtls_log(MESHTLS_LOG_WARN,
                        "limits: router %s's counts stay in %s until they expire (%d ms): %s",
                        w->router_id, mt_db_url_safe(w->db), RT_LIM_EXPIRE_MS, e.msg);
    }
    mt_db_release(c);
    return NULL;
}

/* hostname:pid:random, unique among the routers on one database (a restart is a new one) */
static void make_router_id(char *out, size_t cap)
{
    char host[65] = "";
    unsigned char rnd[4] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "router");
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        /* only ever a tie-break beside host and pid: the clock will do */
        uint64_t t = (uint64_t)mt_now_ms();
        memcpy(rnd, &t, sizeof(rnd));
    }
    snprintf(out, cap, "%s:%ld:%02x%02x%02x%02x", host, (long)getpid(), rnd[0], rnd[1], rnd[2],
             rnd[3]);
}

int rt_watch_start(struct rt_watch *w, const char *url, struct rt_cache *cache,
                   struct rt_live *live, struct rt_limits *limits, struct meshtls_err *err)
{
    /* bounded waits: a dead server is noticed within a tick or two, never a hang */
    struct mt_db_opts o = {.pool_size = 1, .acquire_timeout_ms = 1000, .connect_timeout_s = 2};
    w->cache = cache;
    w->live = live;
    w->limits = limits;
    w->lim_resync = 1; /* our first round writes everything (and clears nothing of others') */
    w->lim_state = RT_LIM_LOCAL;
    make_router_id(w->router_id, sizeof(w->router_id));
    int rc = mt_db_open(url, &o, &w->db, err);
    if (rc)
        return rc;
    char missing[128];
    struct meshtls_err te = MESHTLS_ERR_INIT;
    if (rt_db_triggers_missing(w->db, missing, sizeof(missing), &te) != 0)
        meshtls_log(MESHTLS_LOG_WARN, "cannot check the change triggers: %s", te.msg);
    else if (missing[0])
        meshtls_log(MESHTLS_LOG_WARN,
                    "database %s: tables without the router's change trigger: %s (the "
                    "router's role does not own them): changes made there by plain SQL are "
                    "seen only after --cache-ttl and --recheck-interval; have their owner run "
                    "the trigger SQL of docs/ROUTER.md",
                    mt_db_url_safe(w->db), missing);
    /* the baseline before the engine starts: a change between now and the thread's first
     * look must not become the baseline, with decisions cached before it */
    struct meshtls_err le = MESHTLS_ERR_INIT;
    w->seen = -1;
    if (mt_db_acquire(w->db, &w->conn, &le) != 0 ||
        mt_db_listen(w->conn, RT_DB_CHANNEL, &le) != 0 ||
        rt_db_version_conn(w->conn, &w->seen, &le) != 0) {
        meshtls_log(MESHTLS_LOG_WARN, "database watcher: %s (retrying)", le.msg);
        mt_db_release(w->conn);
        w->conn = NULL;
    }
    if (pthread_create(&w->t, NULL, watch_loop, w) != 0) {
        mt_db_release(w->conn);
        w->conn = NULL;
        mt_db_close(w->db);
        w->db = NULL;
        return meshtls_err_set(err, MESHTLS_ENOMEM, "cannot start the database watcher thread");
    }
    w->started = 1;
    return 0;
}

void rt_watch_stop(struct rt_watch *w)
{
    if (w->started) {
        atomic_store(&w->stop, 1);
        pthread_join(w->t, NULL);
        w->started = 0;
    }
    mt_db_close(w->db);
    w->db = NULL;
}
