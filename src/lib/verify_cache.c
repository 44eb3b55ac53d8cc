/*
 * verify_cache.c - the cache of verified client chains (see meshtls/tls.h).
 *
 * Entries are small (a 32-byte key, two times); a fixed-size open hash with
 * FIFO eviction under one mutex.  The cache remembers the trust digest it
 * was last used with: a different one empties it, so a reload of the CA
 * bundle or the CRL drops every entry at once.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "verify_cache.h"

struct ventry {
    unsigned char key[32];
    int64_t not_before, expires;
    struct ventry *hnext, *newer;
};

struct meshtls_verify_cache {
    pthread_mutex_t mu;
    atomic_int refs;
    size_t max, n, nbuckets;
    struct ventry **buckets;
    struct ventry *oldest, *newest;
    unsigned char trust[32];
    int have_trust;
    atomic_ullong hits, misses;
};

int meshtls_verify_cache_new(size_t max_entries, struct meshtls_verify_cache **out)
{
    if (max_entries < 1 || max_entries > 10000000)
        return MESHTLS_EINVAL;
    struct meshtls_verify_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return MESHTLS_ENOMEM;
    c->nbuckets = max_entries < 64 ? 64 : max_entries;
    if (!(c->buckets = calloc(c->nbuckets, sizeof(*c->buckets)))) {
        free(c);
        return MESHTLS_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 1);
    c->max = max_entries;
    *out = c;
    return 0;
}

static void flush_locked(struct meshtls_verify_cache *c)
{
    for (struct ventry *e = c->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    memset(c->buckets, 0, c->nbuckets * sizeof(*c->buckets));
    c->oldest = c->newest = NULL;
    c->n = 0;
}

void meshtls_verify_cache_free(struct meshtls_verify_cache *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    flush_locked(c);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void meshtls_verify_cache_stats(struct meshtls_verify_cache *c, unsigned long long *hits,
                                unsigned long long *misses)
{
    if (hits)
        *hits = atomic_load(&c->hits);
    if (misses)
        *misses = atomic_load(&c->misses);
}

void mt_verify_cache_up_ref(struct meshtls_verify_cache *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void mt_verify_cache_attach(struct meshtls_verify_cache *c, const unsigned char trust[32])
{
    pthread_mutex_lock(&c->mu);
    if (!c->have_trust || memcmp(c->trust, trust, 32) != 0) {
        flush_locked(c); /* new CA bundle or CRL: nothing verified before counts */
        memcpy(c->trust, trust, 32);
        c->have_trust = 1;
    }
    pthread_mutex_unlock(&c->mu);
}

static size_t bucket(const struct meshtls_verify_cache *c, const unsigned char key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h)); /* the key is a SHA-256: already uniform */
    return (size_t)(h % c->nbuckets);
}

int mt_verify_cache_hit(struct meshtls_verify_cache *c, const unsigned char key[32], int64_t now)
{
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    for (struct ventry *e = c->buckets[bucket(c, key)]; e; e = e->hnext)
        if (!memcmp(e->key, key, 32)) {
            hit = now >= e->not_before && now < e->expires;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
    return hit;
}

void mt_verify_cache_add(struct meshtls_verify_cache *c, const unsigned char key[32],
                         int64_t not_before, int64_t expires)
{
    struct ventry *e = calloc(1, sizeof(*e)), *evicted = NULL;
    if (!e)
        return;
    memcpy(e->key, key, 32);
    e->not_before = not_before;
    e->expires = expires;
    pthread_mutex_lock(&c->mu);
    size_t b = bucket(c, key);
    for (struct ventry *x = c->buckets[b]; x; x = x->hnext)
        if (!memcmp(x->key, key, 32)) { /* already there (a concurrent miss) */
            pthread_mutex_unlock(&c->mu);
            free(e);
            return;
        }
    if (c->n >= c->max && c->oldest) {
        evicted = c->oldest;
        struct ventry **pp = &c->buckets[bucket(c, evicted->key)];
        while (*pp && *pp != evicted)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = evicted->hnext;
        c->oldest = evicted->newer;
        if (!c->oldest)
            c->newest = NULL;
        c->n--;
    }
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->n++;
    pthread_mutex_unlock(&c->mu);
    free(evicted);
}
