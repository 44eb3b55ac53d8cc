/*
 * router_limits.c - per-user and per-organisation limits: connection attempts (at most
 * `rate` admitted in the last minute) and concurrent sessions, shared by every router on
 * one database (docs/ROUTER.md, "Limits").
 *
 * Local counts: one table of keys ("o:<org>" and "u:<org>/<user>") under one mutex: the
 * critical sections are a hash lookup or two and a few additions, far below the cost of the
 * handshake that precedes them.  Entries that hold nothing (no session, no attempt in the
 * window, nothing left published) are swept by rt_limits_sweep, so memory follows the
 * active users, not every user ever seen.
 *
 * Why a window and not a token bucket: the counts of several routers must add up.  Attempts
 * in the last minute do (mine + yours = ours); the level of a bucket does not (two buckets
 * that each refill at the rate refill the pair at twice the rate).  The window is 13 slots of
 * 5 s: an admitted attempt counts for 60 to 65 s, so "N per minute" never lets more than N
 * through in any 60 s, and a burst of N is allowed.
 *
 * Others' counts: the watcher thread (router_watch.c) builds a struct rt_lim_others from the
 * database off the lock and swaps the pointer in under it; the check adds what it finds there.
 * The table is immutable once swapped in, so a lookup needs nothing but the mutex it already
 * holds, and the event loop never waits on the database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define NB 4096  /* hash buckets of the local table */
#define ONB 4096 /* hash buckets of an others' table (32 KiB; two alive during a swap) */

struct lim_ent {
    struct lim_ent *next;
    int64_t slot_at;              /* the slot (now / RT_LIM_SLOT_MS) slots[] ends with */
    uint32_t slots[RT_LIM_SLOTS]; /* attempts admitted, per slot (a ring) */
    int active;                   /* open sessions */
    int64_t pub_active;           /* what the database has from this router: */
    int64_t pub_attempts;         /* ... rt_limits_changes publishes the difference */
    char key[];
};

/* the others' sums, one entry per key (immutable once built) */
struct oth_ent {
    struct oth_ent *next;
    int64_t active, attempts;
    char key[];
};

struct rt_lim_others {
    struct oth_ent *b[ONB];
    char (*routers)[RT_LIM_ROUTER_MAX + 1]; /* distinct routers added */
    size_t n_routers, cap_routers;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* "o:<org>" (user NULL or "") or "u:<org>/<user>": ids are SPIFFE path characters, never '/' */
static void mkkey(char *out, size_t cap, const char *org, const char *user)
{
    if (user && user[0])
        snprintf(out, cap, "u:%s/%s", org, user);
    else
        snprintf(out, cap, "o:%s", org);
}

#define KEY_MAX (2 * RT_ID_MAX + 4)

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
    rt_lim_others_free(l->others);
    l->others = NULL;
    pthread_mutex_destroy(&l->mu);
}

int rt_limits_on(const struct rt_limits *l)
{
    return l && l->b &&
           (l->o.user_rate || l->o.org_rate || l->o.user_sessions || l->o.org_sessions);
}

/* The entry for key, made if missing (NULL when out of memory).  Under mu. */
static struct lim_ent *get(struct rt_limits *l, const char *key, int64_t now)
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
    e->slot_at = now / RT_LIM_SLOT_MS;
    e->next = *slot;
    *slot = e;
    l->entries++;
    return e;
}

/* Move the ring on to `now`: the slots that fell out of the window are emptied.  A `now`
 * behind the ring (another thread's clock read a little earlier) counts in the newest slot. */
static void age(struct lim_ent *e, int64_t now)
{
    int64_t idx = now / RT_LIM_SLOT_MS;
    if (idx <= e->slot_at)
        return;
    if (idx - e->slot_at >= RT_LIM_SLOTS)
        memset(e->slots, 0, sizeof(e->slots));
    else
        for (int64_t i = e->slot_at + 1; i <= idx; i++)
            e->slots[i % RT_LIM_SLOTS] = 0;
    e->slot_at = idx;
}

static int64_t window(const struct lim_ent *e)
{
    int64_t n = 0;
    for (int i = 0; i < RT_LIM_SLOTS; i++)
        n += e->slots[i];
    return n;
}

/* The others' sums under key, NULL when there are none. */
static const struct oth_ent *oth_find(const struct rt_lim_others *o, const char *key)
{
    if (o)
        for (const struct oth_ent *e = o->b[hash(key) % ONB]; e; e = e->next)
            if (!strcmp(e->key, key))
                return e;
    return NULL;
}

/* Over `rate` (0: no limit) with `mine` here and what the others counted under `key`. */
static int over(const struct rt_limits *l, int rate, int64_t mine, const char *key, int sessions)
{
    if (!rate)
        return 0;
    const struct oth_ent *e = oth_find(l->others, key);
    return mine + (e ? (sessions ? e->active : e->attempts) : 0) >= rate;
}

enum rt_code rt_limits_attempt(struct rt_limits *l, const char *org, const char *user,
                               int64_t now_ms)
{
    if (!l || !l->b || (!l->o.user_rate && !l->o.org_rate))
        return RT_OK;
    char ko[KEY_MAX], ku[KEY_MAX];
    mkkey(ko, sizeof(ko), org, NULL);
    mkkey(ku, sizeof(ku), org, user);
    enum rt_code rc = RT_OK;
    pthread_mutex_lock(&l->mu);
    struct lim_ent *u = get(l, ku, now_ms), *o = get(l, ko, now_ms);
    if (!u || !o) {
        rc = RT_BUSY; /* out of memory: refuse rather than run unlimited */
    } else {
        age(u, now_ms);
        age(o, now_ms);
        if (over(l, l->o.user_rate, window(u), ku, 0) || over(l, l->o.org_rate, window(o), ko, 0)) {
            rc = RT_RATE_LIMITED;
        } else {
            u->slots[u->slot_at % RT_LIM_SLOTS]++;
            o->slots[o->slot_at % RT_LIM_SLOTS]++;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

enum rt_code rt_limits_acquire(struct rt_limits *l, const char *org, const char *user)
{
    if (!l || !l->b || (!l->o.user_sessions && !l->o.org_sessions))
        return RT_OK;
    char ko[KEY_MAX], ku[KEY_MAX];
    mkkey(ko, sizeof(ko), org, NULL);
    mkkey(ku, sizeof(ku), org, user);
    enum rt_code rc = RT_OK;
    pthread_mutex_lock(&l->mu);
    /* the ring of a new entry starts at slot 0: the next attempt ages it (all empty anyway) */
    struct lim_ent *u = get(l, ku, 0), *o = get(l, ko, 0);
    if (!u || !o)
        rc = RT_BUSY;
    else if (over(l, l->o.user_sessions, u->active, ku, 1) ||
             over(l, l->o.org_sessions, o->active, ko, 1))
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
    char ko[KEY_MAX], ku[KEY_MAX];
    mkkey(ko, sizeof(ko), org, NULL);
    mkkey(ku, sizeof(ku), org, user);
    pthread_mutex_lock(&l->mu);
    struct lim_ent *u = get(l, ku, 0), *o = get(l, ko, 0);
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
            age(e, now_ms);
            /* a count the database still has from us must first be published as 0 */
            if (e->active == 0 && window(e) == 0 && !e->pub_active && !e->pub_attempts) {
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

/* ---- sharing with the other routers (called by the watcher) -------------------------- */

/* Split a key back into org and user ("" for an organisation's key). */
static void unkey(const char *key, struct rt_lim_row *r)
{
    const char *s = key + 2, *slash = key[0] == 'u' ? strchr(s, '/') : NULL;
    size_t no = slash ? (size_t)(slash - s) : strlen(s);
    snprintf(r->org, sizeof(r->org), "%.*s", (int)no, s);
    snprintf(r->user, sizeof(r->user), "%s", slash ? slash + 1 : "");
}

int rt_limits_changes(struct rt_limits *l, int64_t now_ms, int all, struct rt_lim_row **out,
                      size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!l || !l->b)
        return 0;
    struct rt_lim_row *v = NULL;
    size_t nv = 0, cap = 0;
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    /* first pass: collect; the marks are set only once the array is complete, so that an
     * allocation failure leaves every entry as it was (published again next time) */
    for (size_t i = 0; i < NB && !rc; i++)
        for (struct lim_ent *e = l->b[i]; e && !rc; e = e->next) {
            age(e, now_ms);
            int64_t w = window(e);
            int changed =
                all ? (e->active || w) : (e->active != e->pub_active || w != e->pub_attempts);
            if (!changed)
                continue;
            if (nv == cap) {
                size_t nc = cap ? cap * 2 : 64;
                void *p = realloc(v, nc * sizeof(*v));
                if (!p) {
                    rc = MESHTLS_ENOMEM;
                    break;
                }
                v = p;
                cap = nc;
            }
            struct rt_lim_row *r = &v[nv++];
            memset(r, 0, sizeof(*r));
            unkey(e->key, r);
            r->active = e->active;
            r->attempts = w;
        }
    if (!rc)
        for (size_t i = 0; i < NB; i++)
            for (struct lim_ent *e = l->b[i]; e; e = e->next) {
                e->pub_active = e->active;
                e->pub_attempts = window(e);
            }
    pthread_mutex_unlock(&l->mu);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = nv;
    return 0;
}

void rt_limits_unpublish(struct rt_limits *l)
{
    if (!l || !l->b)
        return;
    /* nothing is known to be published: every mark back to 0 lets the sweep free what is
     * idle, and the next round (a resync) writes what is not */
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < NB; i++)
        for (struct lim_ent *e = l->b[i]; e; e = e->next)
            e->pub_active = e->pub_attempts = 0;
    pthread_mutex_unlock(&l->mu);
}

struct rt_lim_others *rt_lim_others_new(void)
{
    return calloc(1, sizeof(struct rt_lim_others));
}

void rt_lim_others_free(struct rt_lim_others *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < ONB; i++)
        for (struct oth_ent *e = o->b[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    free(o->routers);
    free(o);
}

static int note_router(struct rt_lim_others *o, const char *router)
{
    for (size_t i = 0; i < o->n_routers; i++)
        if (!strcmp(o->routers[i], router))
            return 0;
    if (o->n_routers == o->cap_routers) {
        size_t nc = o->cap_routers ? o->cap_routers * 2 : 4;
        void *p = realloc(o->routers, nc * sizeof(*o->routers));
        if (!p)
            return MESHTLS_ENOMEM;
        o->routers = p;
        o->cap_routers = nc;
    }
    snprintf(o->routers[o->n_routers++], RT_LIM_ROUTER_MAX + 1, "%s", router);
    return 0;
}

int rt_lim_others_add(struct rt_lim_others *o, const struct rt_lim_row *row, const char *self,
                      int64_t expire_ms)
{
    if (!strcmp(row->router, self) || row->age_ms > expire_ms || !row->org[0])
        return 0;
    if (row->active <= 0 && row->attempts <= 0)
        return 0;
    char key[KEY_MAX];
    mkkey(key, sizeof(key), row->org, row->user);
    if (note_router(o, row->router) != 0)
        return MESHTLS_ENOMEM;
    struct oth_ent **slot = &o->b[hash(key) % ONB], *e;
    for (e = *slot; e; e = e->next)
        if (!strcmp(e->key, key))
            break;
    if (!e) {
        size_t n = strlen(key);
        if (!(e = calloc(1, sizeof(*e) + n + 1)))
            return MESHTLS_ENOMEM;
        memcpy(e->key, key, n + 1);
        e->next = *slot;
        *slot = e;
    }
    /* a negative count in a row written by hand counts as 0, never as room */
    e->active += row->active > 0 ? row->active : 0;
    e->attempts += row->attempts > 0 ? row->attempts : 0;
    return 1;
}

void rt_lim_others_get(const struct rt_lim_others *o, const char *org, const char *user,
                       int64_t *active, int64_t *attempts)
{
    *active = *attempts = 0;
    char key[KEY_MAX];
    mkkey(key, sizeof(key), org, user);
    const struct oth_ent *e = oth_find(o, key);
    if (e)
        *active = e->active, *attempts = e->attempts;
}

size_t rt_lim_others_routers(const struct rt_lim_others *o)
{
    return o ? o->n_routers : 0;
}

struct rt_lim_others *rt_limits_set_others(struct rt_limits *l, struct rt_lim_others *o)
{
    pthread_mutex_lock(&l->mu);
    struct rt_lim_others *old = l->others;
    l->others = o;
    pthread_mutex_unlock(&l->mu);
    return old;
}

int rt_lim_keep_others(int64_t since_ok_ms, int64_t keep_ms)
{
    return since_ok_ms >= 0 && since_ok_ms < keep_ms;
}

uint64_t rt_lim_fingerprint(uint64_t h, const char *id, int64_t seq)
{
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL; /* the id's end: "a" + 12 differs from "a1" + 2 */
    for (int i = 0; i < 8; i++)
        h = (h ^ (uint8_t)((uint64_t)seq >> (8 * i))) * 1099511628211ULL;
    return h;
}
