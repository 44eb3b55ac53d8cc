/*
 * router_cache.c - decisions of the last moments, so the database is not on every
 * connection's critical path.  Two ages bound what it answers:
 *   - fresh (--cache-ttl, default 500 ms): answered on the event loop without a query, so a
 *     removed grant refuses new connects within that time;
 *   - stale (--stale-max, default 30 s): answered only when the database fails, then the
 *     router fails closed with authz-unavailable.
 * Bounded: at RT_CACHE_MAX entries the table is emptied (a burst of misses follows, never
 * unbounded memory).  One mutex; lookups are a hash and a string compare.
 *
 * Invalidation (router_watch.c) empties it when the data changes.  A lookup that read the
 * database before that change and stores its verdict after would put the old answer back:
 * the generation (one per clear) read before the lookup makes such a put a no-op.
 */
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define NB 8192
#define RT_CACHE_MAX 100000

struct rt_cent {
    struct rt_cent *next;
    int64_t at_ms;
    struct rt_cached v;
    size_t klen;
    char key[];
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* "org\0user\0cid" into k; @return its length. */
static size_t mkkey(char *k, const char *org, const char *user, const char *cid)
{
    size_t a = strlen(org), b = strlen(user), c = strlen(cid);
    memcpy(k, org, a + 1);
    memcpy(k + a + 1, user, b + 1);
    memcpy(k + a + b + 2, cid, c);
    return a + b + c + 2;
}

int rt_cache_init(struct rt_cache *c)
{
    memset(c, 0, sizeof(*c));
    if (!(c->b = calloc(NB, sizeof(*c->b))))
        return MESHTLS_ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    return 0;
}

static void clear(struct rt_cache *c)
{
    for (size_t i = 0; i < NB; i++) {
        for (struct rt_cent *e = c->b[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
        c->b[i] = NULL;
    }
    c->n = 0;
}

void rt_cache_free(struct rt_cache *c)
{
    if (!c->b)
        return;
    clear(c);
    free(c->b);
    c->b = NULL;
    pthread_mutex_destroy(&c->mu);
}

void rt_cache_clear(struct rt_cache *c)
{
    if (!c || !c->b)
        return;
    pthread_mutex_lock(&c->mu);
    clear(c);
    c->gen++;
    pthread_mutex_unlock(&c->mu);
}

uint64_t rt_cache_gen(struct rt_cache *c)
{
    if (!c || !c->b)
        return 0;
    pthread_mutex_lock(&c->mu);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->mu);
    return g;
}

int rt_cache_get(struct rt_cache *c, const char *org, const char *user, const char *cid,
                 int64_t now_ms, int64_t max_age_ms, struct rt_cached *out)
{
    if (!c || !c->b || max_age_ms <= 0)
        return 0;
    char k[2 * RT_ID_MAX + RT_CONNECT_ID_MAX + 3];
    size_t kl = mkkey(k, org, user, cid);
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    for (struct rt_cent *e = c->b[hash(k, kl) % NB]; e; e = e->next)
        if (e->klen == kl && !memcmp(e->key, k, kl)) {
            if (now_ms - e->at_ms <= max_age_ms) {
                *out = e->v;
                hit = 1;
            }
            break;
        }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void rt_cache_put(struct rt_cache *c, const char *org, const char *user, const char *cid,
                  int64_t now_ms, uint64_t gen, const struct rt_cached *v)
{
    if (!c || !c->b)
        return;
    char k[2 * RT_ID_MAX + RT_CONNECT_ID_MAX + 3];
    size_t kl = mkkey(k, org, user, cid);
    pthread_mutex_lock(&c->mu);
    if (gen != c->gen) { /* read before a change: the answer may be the old one */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    struct rt_cent **slot = &c->b[hash(k, kl) % NB];
    struct rt_cent *e = *slot;
    while (e && !(e->klen == kl && !memcmp(e->key, k, kl)))
        e = e->next;
    if (!e) {
        if (c->n >= RT_CACHE_MAX)
            clear(c);
        slot = &c->b[hash(k, kl) % NB];
        if ((e = calloc(1, sizeof(*e) + kl))) {
            memcpy(e->key, k, kl);
            e->klen = kl;
            e->next = *slot;
            *slot = e;
            c->n++;
        }
    }
    if (e) {
        e->v = *v;
        e->at_ms = now_ms;
    }
    pthread_mutex_unlock(&c->mu);
}
