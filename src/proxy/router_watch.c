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
 * Blocking: this thread only (database calls, bounded waits); never an event loop.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meshtls/log.h"
#include "router.h"

#define WATCH_TICK_MS 250

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
            pause_ms(WATCH_TICK_MS);
            continue;
        }
        char payload[64];
        int got = mt_db_wait_change(c, WATCH_TICK_MS, payload, sizeof(payload), &e);
        int64_t v = -1;
        if (got < 0 || rt_db_version_conn(c, &v, &e) != 0) {
            mt_db_release(c); /* the pool resets a broken PostgreSQL session on acquire */
            c = NULL;
            set_up(w, 0, e.msg);
            missed = 1;
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
    }
    mt_db_release(c);
    return NULL;
}

int rt_watch_start(struct rt_watch *w, const char *url, struct rt_cache *cache,
                   struct rt_live *live, struct meshtls_err *err)
{
    /* bounded waits: a dead server is noticed within a tick or two, never a hang */
    struct mt_db_opts o = {.pool_size = 1, .acquire_timeout_ms = 1000, .connect_timeout_s = 2};
    w->cache = cache;
    w->live = live;
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
