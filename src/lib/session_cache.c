/*
 * session_cache.c - the shared server session cache (see meshtls/tls.h).
 *
 * A hash table of session IDs (open hashing, fixed bucket count chosen from
 * max_entries) plus a FIFO list for eviction, under one mutex.  Entries hold
 * a reference on their SSL_SESSION.  The lookup hands OpenSSL a reference
 * taken under the lock (copy = 0), so a concurrent eviction can never free
 * a session that a handshake is about to use.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "session_cache.h"

struct entry {
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    unsigned id_len;
    unsigned char trust[32];     /* digest of the trust the session was verified under */
    int64_t expires;             /* min(session end, client cert notAfter) */
    SSL_SESSION *sess;           /* one reference */
    struct entry *hnext;         /* bucket chain */
    struct entry *older, *newer; /* FIFO: head = oldest */
};

struct meshtls_session_cache {
    pthread_mutex_t mu;
    atomic_int refs;
    size_t max, n, nbuckets;
    int lifetime;
    struct entry **buckets;
    struct entry *oldest, *newest;
};

static size_t hash_id(const unsigned char *id, unsigned len, size_t nb)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: IDs are random already */
    for (unsigned i = 0; i < len; i++)
        h = (h ^ id[i]) * 1099511628211ULL;
    return (size_t)(h % nb);
}

int meshtls_session_cache_new(size_t max_entries, int lifetime_s,
                              struct meshtls_session_cache **out)
{
    if (max_entries < 1 || max_entries > 10000000 || lifetime_s < 1)
        return MESHTLS_EINVAL;
    struct meshtls_session_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return MESHTLS_ENOMEM;
    c->nbuckets = max_entries < 64 ? 64 : max_entries;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return MESHTLS_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 1);
    c->max = max_entries;
    c->lifetime = lifetime_s;
    *out = c;
    return 0;
}

void mt_session_cache_up_ref(struct meshtls_session_cache *c)
{
    atomic_fetch_add(&c->refs, 1);
}

/* Unlink `e` from its bucket and the FIFO; caller holds the lock. */
static void unlink_entry(struct meshtls_session_cache *c, struct entry *e)
{
    struct entry **pp = &c->buckets[hash_id(e->id, e->id_len, c->nbuckets)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    c->n--;
}

static struct entry *find(struct meshtls_session_cache *c, const unsigned char *id, unsigned len)
{
    struct entry *e = c->buckets[hash_id(id, len, c->nbuckets)];
    while (e && (e->id_len != len || memcmp(e->id, id, len) != 0))
        e = e->hnext;
    return e;
}

void meshtls_session_cache_free(struct meshtls_session_cache *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    for (struct entry *e = c->oldest, *n; e; e = n) {
        n = e->newer;
        SSL_SESSION_free(e->sess);
        free(e);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

size_t meshtls_session_cache_size(struct meshtls_session_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int mt_session_cache_add(struct meshtls_session_cache *c, SSL_SESSION *sess,
                         const unsigned char trust[32])
{
    unsigned len = 0;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    if (!len || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    int64_t now = (int64_t)time(NULL);
    int64_t expires = now + c->lifetime;
    X509 *peer = SSL_SESSION_get0_peer(sess);
    if (peer) {
        int days = 0, secs = 0;
        ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)now);
        if (t && ASN1_TIME_diff(&days, &secs, t, X509_get0_notAfter(peer))) {
            int64_t left = (int64_t)days * 86400 + secs;
            if (now + left < expires)
                expires = now + left;
        }
        ASN1_TIME_free(t);
    }
    if (expires <= now)
        return 0;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return 0;
    memcpy(e->id, id, len);
    e->id_len = len;
    memcpy(e->trust, trust, 32);
    e->expires = expires;
    e->sess = sess; /* takes the caller's reference */

    pthread_mutex_lock(&c->mu);
    struct entry *old = find(c, id, len);
    struct entry *evicted = NULL;
    if (old)
        unlink_entry(c, old);
    else if (c->n >= c->max && c->oldest) {
        evicted = c->oldest;
        unlink_entry(c, evicted);
    }
    size_t b = hash_id(id, len, c->nbuckets);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->n++;
    pthread_mutex_unlock(&c->mu);
    /* free outside the lock */
    if (old) {
        SSL_SESSION_free(old->sess);
        free(old);
    }
    if (evicted) {
        SSL_SESSION_free(evicted->sess);
        free(evicted);
    }
    return 1;
}

SSL_SESSION *mt_session_cache_get(struct meshtls_session_cache *c, const unsigned char *id,
                                  unsigned len, const unsigned char trust[32])
{
    SSL_SESSION *s = NULL;
    struct entry *dead = NULL;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&c->mu);
    struct entry *e = find(c, id, len);
    if (e && (e->expires <= now || memcmp(e->trust, trust, 32) != 0)) {
        unlink_entry(c, e); /* expired, or verified under other trust: never resume */
        dead = e;
    } else if (e && SSL_SESSION_up_ref(e->sess)) {
        s = e->sess;
    }
    pthread_mutex_unlock(&c->mu);
    if (dead) {
        SSL_SESSION_free(dead->sess);
        free(dead);
    }
    return s;
}

void mt_session_cache_remove(struct meshtls_session_cache *c, SSL_SESSION *sess)
{
    unsigned len = 0;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    pthread_mutex_lock(&c->mu);
    struct entry *e = find(c, id, len);
    if (e)
        unlink_entry(c, e);
    pthread_mutex_unlock(&c->mu);
    if (e) {
        SSL_SESSION_free(e->sess);
        free(e);
    }
}
