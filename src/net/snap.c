/*
 * snap.c - refcounted, immutable snapshots and the holder a reload swaps.
 *
 * Acquire takes the holder's mutex for one increment: uncontended it costs about
 * what SSL_new's own context locking does, and it makes "read the pointer, then
 * take a reference" atomic against a publish that drops the last holder reference.
 */
#include "net.h"

void mt_snap_init(struct mt_snap *s, void (*destroy)(struct mt_snap *s))
{
    atomic_init(&s->refs, 1);
    s->destroy = destroy;
}

struct mt_snap *mt_snap_acquire(struct mt_snap_holder *h)
{
    pthread_mutex_lock(&h->mu);
    struct mt_snap *s = h->cur;
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&h->mu);
    return s;
}

void mt_snap_release(struct mt_snap *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        s->destroy(s);
}

void mt_snap_publish(struct mt_snap_holder *h, struct mt_snap *s)
{
    pthread_mutex_lock(&h->mu);
    struct mt_snap *old = h->cur;
    s->generation = ++h->generation;
    h->cur = s;
    pthread_mutex_unlock(&h->mu);
    mt_snap_release(old);
}

void mt_snap_holder_clear(struct mt_snap_holder *h)
{
    pthread_mutex_lock(&h->mu);
    struct mt_snap *old = h->cur;
    h->cur = NULL;
    pthread_mutex_unlock(&h->mu);
    mt_snap_release(old);
}
