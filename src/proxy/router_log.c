/*
 * router_log.c - the connection log: one row per connection in router_connections (who,
 * which host, when, result and reason, bytes each way, duration, decision time), written
 * by one thread of its own in batches, so neither an event loop nor a decision waits for
 * it.  The queue is bounded: when the database is slow or down, records beyond it are
 * dropped and counted (the audit and close log lines still carry everything).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meshtls/log.h"
#include "router.h"

#define RT_LOG_BATCH 256
#define RT_LOG_GATHER_MS 50 /* how long a batch may gather */

struct rt_logrec {
    struct rt_logrec *next;
    int64_t at_ms, bytes_up, bytes_down, duration_ms, decision_us;
    char *s[7]; /* org, user, connect_id, client, target, result, reason */
};

static void rec_free(struct rt_logrec *r)
{
    for (int i = 0; i < 7; i++)
        free(r->s[i]);
    free(r);
}

void rt_connlog_push(struct rt_connlog *l, const struct rt_logentry *e)
{
    if (!l || !l->running)
        return;
    struct rt_logrec *r = calloc(1, sizeof(*r));
    if (!r) {
        atomic_fetch_add(&l->dropped, 1);
        return;
    }
    const char *in[7] = {e->org,    e->user,   e->connect_id, e->client,
                         e->target, e->result, e->reason};
    for (int i = 0; i < 7; i++)
        if (in[i] && !(r->s[i] = strdup(in[i]))) {
            rec_free(r);
            atomic_fetch_add(&l->dropped, 1);
            return;
        }
    r->at_ms = e->at_ms;
    r->bytes_up = (int64_t)e->bytes_up;
    r->bytes_down = (int64_t)e->bytes_down;
    r->duration_ms = e->duration_ms;
    r->decision_us = e->decision_us;
    pthread_mutex_lock(&l->mu);
    if (l->n >= l->max) {
        pthread_mutex_unlock(&l->mu);
        rec_free(r);
        atomic_fetch_add(&l->dropped, 1);
        return;
    }
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static const char insert_sql[] =
    "INSERT INTO router_connections (started_at_ms, org_id, user_id, connect_id, client_addr, "
    "target, result, reason, bytes_up, bytes_down, duration_ms, decision_us) VALUES ($1, $2, "
    "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

static int write_batch(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    for (struct rt_logrec *r = arg; r; r = r->next) {
        struct mt_db_param p[12] = {
            MT_DB_INT64(r->at_ms),      MT_DB_TEXT(r->s[0]),         MT_DB_TEXT(r->s[1]),
            MT_DB_TEXT(r->s[2]),        MT_DB_TEXT(r->s[3]),         MT_DB_TEXT(r->s[4]),
            MT_DB_TEXT(r->s[5]),        MT_DB_TEXT(r->s[6]),         MT_DB_INT64(r->bytes_up),
            MT_DB_INT64(r->bytes_down), MT_DB_INT64(r->duration_ms), MT_DB_INT64(r->decision_us),
        };
        int rc = mt_db_exec(c, insert_sql, p, 12, NULL, err);
        if (rc)
            return rc;
    }
    return 0;
}

static void *writer(void *arg)
{
    struct rt_connlog *l = arg;
    int64_t last_warn = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->head && !l->stop)
            pthread_cond_wait(&l->cv, &l->mu);
        if (!l->head && l->stop) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        /* Let a batch gather before committing: each commit costs a sync of the file, and
         * at hundreds of connections a second a commit per wake-up (a few rows) made the log
         * most of the router's CPU and held the database lock against the decisions' reads
         * (docs/PERFORMANCE.md, "Router").  Bounded: a row reaches the table within
         * RT_LOG_GATHER_MS of its connection's end, or at once when a batch is full. */
        if (!l->stop && l->n < RT_LOG_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += RT_LOG_GATHER_MS * 1000000L;
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            while (!l->stop && l->n < RT_LOG_BATCH &&
                   pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0)
                ;
        }
        /* take up to a batch */
        struct rt_logrec *b = l->head, *t = b;
        size_t n = 1;
        while (t->next && n < RT_LOG_BATCH)
            t = t->next, n++;
        l->head = t->next;
        if (!l->head)
            l->tail = NULL;
        l->n -= n;
        t->next = NULL;
        pthread_mutex_unlock(&l->mu);
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (mt_db_tx(l->db, write_batch, b, &e) != 0) {
            atomic_fetch_add(&l->dropped, n);
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - last_warn >= 10) { /* at most one warning per 10 s */
                last_warn = now.tv_sec;
                meshtls_log(MESHTLS_LOG_WARN,
                            "connection log: %zu record(s) dropped, the database refused: %s", n,
                            e.msg);
            }
        } else {
            atomic_fetch_add(&l->written, n);
        }
        while (b) {
            struct rt_logrec *nx = b->next;
            rec_free(b);
            b = nx;
        }
    }
    return NULL;
}

int rt_connlog_start(struct rt_connlog *l, struct mt_db *db, size_t max, struct meshtls_err *err)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    /* the gathering wait is on the monotonic clock: a moved wall clock must not stretch it */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->db = db;
    l->max = max;
    if (pthread_create(&l->t, NULL, writer, l) != 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "cannot start the connection-log thread");
    l->running = 1;
    return 0;
}

void rt_connlog_stop(struct rt_connlog *l)
{
    if (!l->running)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->t, NULL); /* what is queued is written first (bounded by the db's timeouts) */
    l->running = 0;
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
}
