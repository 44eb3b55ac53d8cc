/*
 * router_limits.c - per-user and per-organisation limits: connection attempts (a token
 * bucket: `rate` per minute, bursts up to `rate`) and concurrent sessions.  One table of
 * keys ("o:<org>" and "u:<org>/<user>") under one mutex: the critical sections are a hash
 * lookup and a few additions, far below the cost of the handshake that precedes them.
 * Entries that hold nothing (no session, bucket full again) are swept by rt_limits_sweep,
 * so memory follows the active users, not every user ever seen.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define NB 4096 /* hash buckets */

struct lim_ent {
    struct lim_ent *next;
    double tokens;
    int64_t last_ms;
    int active;
    char key[];
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int rt_limits_init(struct rt_limits *l, const struct rt_limit_opts *o)
{
    memset(l, 0, sizeof(*l));
    l->o = *o;
    if (!(l->b = calloc(NB, sizeof(*l->b))))
        return MESHTLS_ENOMEM;
    pthread_mutex_init(&l->mu, NULL);
    return 0;
}

void rt_limits_free(struct rt_limits *l)
{
    if (!l->b)
        return;
    for (size_t i = 0; i < NB; i++)
        for (struct lim_ent *e = l->b[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    free(l->b);
    l->b = NULL;
    pthread_mutex_destroy(&l->mu);
}

/* The entry for key, made if missing (NULL when out of memory).  Under mu. */
static struct lim_ent *get(struct rt_limits *l, const char *key, int rate, int64_t now)
{
    struct lim_ent **slot = &l->b[hash(key) % NB];
    for (struct lim_ent *e = *slot; e; e = e->next)
        if (!strcmp(e->key, key))
            return e;
    size_t n = strlen(key);
    struct lim_ent *e = calloc(1, sizeof(*e) + n + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, n + 1);
    e->tokens = rate;
    e->last_ms = now;
    e->next = *slot;
    *slot = e;
    l->entries++;
    return e;
}

static void refill(struct lim_ent *e, int rate, int64_t now)
{
    if (now > e->last_ms) {
        e->tokens += (double)(now - e->last_ms) * rate / 60000.0;
        if (e->tokens > rate)
            e->tokens = rate;
        e->last_ms = now;
    }
}

static void keys(const char *org, const char *user, char *ko, char *ku)
{
    snprintf(ko, RT_ID_MAX + 3, "o:%s", org);
    snprintf(ku, 2 * RT_ID_MAX + 4, "u:%s/%s", org, user);
}

enum rt_code rt_limits_attempt(struct rt_limits *l, const char *org, const char *user,
                               int64_t now_ms)
{
    if (!l || !l->b || (!l->o.user_rate && !l->o.org_rate))
        return RT_OK;
    char ko[RT_ID_MAX + 3], ku[2 * RT_ID_MAX + 4];
    keys(org, user, ko, ku);
    enum rt_code rc = RT_OK;
    pthread_mutex_lock(&l->mu);
    struct lim_ent *u = l->o.user_rate ? get(l, ku, l->o.user_rate, now_ms) : NULL;
    struct lim_ent *o = l->o.org_rate ? get(l, ko, l->o.org_rate, now_ms) : NULL;
    if ((l->o.user_rate && !u) || (l->o.org_rate && !o)) {
        rc = RT_BUSY; /* out of memory: refuse rather than run unlimited */
    } else {
        if (u)
            refill(u, l->o.user_rate, now_ms);
        if (o)
            refill(o, l->o.org_rate, now_ms);
        if ((u && u->tokens < 1) || (o && o->tokens < 1)) {
            rc = RT_RATE_LIMITED;
        } else {
            if (u)
                u->tokens -= 1;
            if (o)
                o->tokens -= 1;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

enum rt_code rt_limits_acquire(struct rt_limits *l, const char *org, const char *user)
{
    if (!l || !l->b || (!l->o.user_sessions && !l->o.org_sessions))
        return RT_OK;
    char ko[RT_ID_MAX + 3], ku[2 * RT_ID_MAX + 4];
    keys(org, user, ko, ku);
    enum rt_code rc = RT_OK;
    pthread_mutex_lock(&l->mu);
    /* entries made here start with full buckets (now_ms 0 keeps them refill-neutral) */
    struct lim_ent *u = get(l, ku, l->o.user_rate, 0), *o = get(l, ko, l->o.org_rate, 0);
    if (!u || !o)
        rc = RT_BUSY;
    else if ((l->o.user_sessions && u->active >= l->o.user_sessions) ||
             (l->o.org_sessions && o->active >= l->o.org_sessions))
        rc = RT_TOO_MANY_SESSIONS;
    else
        u->active++, o->active++;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void rt_limits_release(struct rt_limits *l, const char *org, const char *user)
{
    if (!l || !l->b || (!l->o.user_sessions && !l->o.org_sessions))
        return;
    char ko[RT_ID_MAX + 3], ku[2 * RT_ID_MAX + 4];
    keys(org, user, ko, ku);
    pthread_mutex_lock(&l->mu);
    struct lim_ent *u = get(l, ku, l->o.user_rate, 0), *o = get(l, ko, l->o.org_rate, 0);
    if (u && u->active > 0)
        u->active--;
    if (o && o->active > 0)
        o->active--;
    pthread_mutex_unlock(&l->mu);
}

size_t rt_limits_sweep(struct rt_limits *l, int64_t now_ms)
{
    if (!l || !l->b)
        return 0;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < NB; i++) {
        struct lim_ent **pp = &l->b[i];
        while (*pp) {
            struct lim_ent *e = *pp;
            int rate = e->key[0] == 'u' ? l->o.user_rate : l->o.org_rate;
            refill(e, rate, now_ms);
            if (e->active == 0 && e->tokens >= rate) {
                *pp = e->next;
                free(e);
                l->entries--;
            } else {
                pp = &e->next;
            }
        }
    }
    size_t n = l->entries;
    pthread_mutex_unlock(&l->mu);
    return n;
}
