/*
 * engine.c - worker threads, listeners, the connection life cycle and the job pool.
 *
 * Each worker owns an epoll set.  Every worker watches every listener with
 * EPOLLEXCLUSIVE, so one of them wakes per new connection and accepts a batch.
 * Connection sockets are registered once, edge-triggered for both directions
 * (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET): no epoll_ctl is needed as a connection
 * changes state.  On any event the connection's step makes all the progress it
 * can; if the protocol stops early for fairness the connection goes on the
 * worker's ready list, so an edge is never lost.
 *
 * epoll's data pointer leads to an end, a listener or the worker's wake-up
 * eventfd; the first byte of each (MT_TAG_*) says which.
 *
 * Closing is deferred: mt_conn_close marks the connection closed and puts it on the
 * worker's free list; it is freed after the current batch of events (and after its
 * jobs are done), so a later event of the same batch never touches freed memory.
 *
 * No file-scope mutable state: everything lives in the engine, its listeners and its
 * workers, so several engines run side by side in one process.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "meshtls/log.h"
#include "net.h"

#define MT_STEP_ACCEPT_MAX 64 /* accepts per wake-up */
#define MT_POOL_MAX 64        /* spare buffers kept per worker (4 MiB) */
#define MT_EVENTS 128

struct mt_listener {
    uint8_t tag; /* MT_TAG_LISTENER */
    struct mt_engine *e;
    int idx;
    struct mt_listener_opts o;
    int fd;
    char addr[80];
    struct mt_listener_stats st;
    atomic_int max_logged;      /* max-conns: 1 while the episode lasts */
    atomic_llong max_logged_ms; /* when it was last logged */
    atomic_int fd_logged;       /* out of descriptors: 0 no, 1 yes, 2 yes and logged */
    atomic_llong fd_logged_ms;
};

struct mt_wake {
    uint8_t tag; /* MT_TAG_WAKE */
    int fd;      /* eventfd: job completions for this worker */
};

struct mt_worker {
    struct mt_engine *e;
    int id;
    int epfd;
    pthread_t th;
    char *pool[MT_POOL_MAX]; /* free MT_BUF buffers: no malloc per read, none held when idle */
    int pool_n;
    struct mt_conn *conns;   /* live */
    struct mt_conn *ready;   /* to step again without an event */
    struct mt_conn *freeing; /* closed, free after the batch */
    int jobs_out;            /* jobs submitted by this worker's connections, not yet done */
    int listening[MT_LISTENERS_MAX];
    int64_t paused_until[MT_LISTENERS_MAX];
    int64_t now_ms; /* monotonic time of the last epoll_wait return */
    struct mt_wake wake;
    pthread_mutex_t done_mu;
    struct mt_job *done; /* completed jobs, newest first */
};

struct mt_engine {
    struct mt_engine_opts o;
    struct mt_listener *ls[MT_LISTENERS_MAX];
    int nls;
    struct mt_worker *w;
    int nw;                /* workers started */
    atomic_int stopping;   /* 1: stop accepting, drain; 2: close what is left */
    atomic_ullong next_id; /* connection ids */
    int joined;
    /* the job pool */
    pthread_mutex_t jmu;
    pthread_cond_t jcv;
    struct mt_job *jhead, *jtail;
    int jqueued, jstop, njth;
    pthread_t *jth;
};

int64_t mt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mt_conn_now_ms(const struct mt_conn *c)
{
    return c->w->now_ms;
}

unsigned mt_conn_shard(const struct mt_conn *c)
{
    return (unsigned)c->w->id;
}

void *mt_conn_listener_arg(const struct mt_conn *c)
{
    return c->l->o.arg;
}

int mt_conn_listener_tls(const struct mt_conn *c)
{
    return c->l->o.tls;
}

const char *mt_conn_listener_name(const struct mt_conn *c)
{
    return c->l->o.name;
}

const char *mt_listener_addr(const struct mt_listener *l)
{
    return l->addr;
}

struct mt_listener_stats *mt_listener_stats(struct mt_listener *l)
{
    return &l->st;
}

long long mt_engine_active(struct mt_engine *e)
{
    long long n = 0;
    for (int i = 0; i < e->nls; i++)
        n += atomic_load(&e->ls[i]->st.active);
    return n;
}

/* Open connections a drain waits for (not those of drain_close listeners). */
static long long drain_pending(struct mt_engine *e)
{
    long long n = 0;
    for (int i = 0; i < e->nls; i++)
        if (!e->ls[i]->o.drain_close)
            n += atomic_load(&e->ls[i]->st.active);
    return n;
}

char *mt_buf_get(struct mt_conn *c)
{
    struct mt_worker *w = c->w;
    return w->pool_n ? w->pool[--w->pool_n] : malloc(MT_BUF);
}

void mt_buf_put(struct mt_conn *c, char *b)
{
    struct mt_worker *w = c->w;
    if (!b)
        return;
    if (w->pool_n < MT_POOL_MAX)
        w->pool[w->pool_n++] = b;
    else
        free(b);
}

void mt_conn_set_timeout(struct mt_conn *c, int ms)
{
    c->deadline_ms = ms > 0 ? c->w->now_ms + ms : 0;
}

void mt_conn_set_proto(struct mt_conn *c)
{
    if (c->state != MT_CONN_CLOSED)
        c->state = MT_CONN_PROTO;
}

void mt_conn_again(struct mt_conn *c)
{
    if (!c->on_ready && c->state != MT_CONN_CLOSED) {
        c->on_ready = 1;
        c->ready_next = c->w->ready;
        c->w->ready = c;
    }
}

int mt_conn_watch(struct mt_conn *c, struct mt_end *e)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = e};
    e->tag = MT_TAG_END;
    e->c = c;
    return epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, e->fd, &ev);
}

/* ---- closing and freeing ------------------------------------------------------- */

static void conn_free(struct mt_conn *c)
{
    struct mt_listener *l = c->l;
    if (c->down.ssl)
        SSL_free(c->down.ssl);
    if (c->up.ssl)
        SSL_free(c->up.ssl);
    if (c->down.fd >= 0)
        close(c->down.fd); /* also leaves the epoll set */
    if (c->up.fd >= 0)
        close(c->up.fd);
    mt_snap_release(c->snap);
    free(c);
    long long left = atomic_fetch_sub(&l->st.active, 1) - 1;
    if (left < l->o.max_conns)
        atomic_store(&l->max_logged, 0);
}

static void queue_free(struct mt_worker *w, struct mt_conn *c)
{
    c->free_next = w->freeing;
    w->freeing = c;
}

void mt_conn_close(struct mt_conn *c, const char *why)
{
    if (c->state == MT_CONN_CLOSED)
        return;
    struct mt_worker *w = c->w;
    c->state = MT_CONN_CLOSED;
    if (c->l->o.ops->on_close)
        c->l->o.ops->on_close(c, why);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->jobs == 0)
        queue_free(w, c); /* else the last job's completion queues it */
}

void mt_conn_close_clean(struct mt_conn *c, const char *why)
{
    struct mt_end *ends[2] = {&c->down, &c->up};
    for (int i = 0; i < 2; i++)
        if (ends[i]->ssl && !ends[i]->wr_shut && SSL_is_init_finished(ends[i]->ssl))
            mt_end_shut_write(ends[i]);
    mt_conn_close(c, why);
}

/* ---- steps ------------------------------------------------------------------ */

static void step_tls(struct mt_conn *c)
{
    struct mt_end *t = c->hs;
    mt_clear_ssl_errors();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        c->state = MT_CONN_PROTO;
        c->l->o.ops->on_tls_done(c, t);
        return;
    }
    int se = SSL_get_error(t->ssl, r);
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
        return;
    c->l->o.ops->on_tls_error(c, t, 0);
    ERR_clear_error();
    mt_conn_close(c, "TLS handshake failed");
}

int mt_conn_start_tls(struct mt_conn *c, struct mt_end *e, SSL *ssl, int client, int timeout_ms)
{
    if (mt_end_tls_attach(e, ssl) != 0) {
        mt_conn_close(c, "cannot create TLS connection (out of memory)");
        return -1;
    }
    if (client)
        SSL_set_connect_state(e->ssl);
    else
        SSL_set_accept_state(e->ssl);
    c->hs = e;
    c->tls_in = e->is_down;
    c->state = MT_CONN_TLS;
    mt_conn_set_timeout(c, timeout_ms);
    if (client)
        step_tls(c); /* we speak first: send the ClientHello now */
    return 0;
}

/* The TLS listener's own handshake on the accepted end. */
static void start_accept_tls(struct mt_conn *c)
{
    SSL *ssl = c->snap && c->snap->ctx ? SSL_new(c->snap->ctx) : NULL;
    if (!ssl) {
        mt_conn_close(c, "cannot create TLS connection");
        return;
    }
    mt_conn_start_tls(c, &c->down, ssl, 0, c->l->o.handshake_timeout_ms);
}

/* Sniffing: a TLS connection starts with a handshake record (0x16); anything else is
 * plaintext that the protocol may answer (e.g. HTTP's "TLS required"). */
static void step_sniff(struct mt_conn *c)
{
    if (!c->down.rd_ready)
        return;
    unsigned char b;
    ssize_t n = recv(c->down.fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        c->down.rd_ready = 0;
        return;
    }
    if (n <= 0) {
        mt_conn_close(c, n == 0 ? "closed before sending anything" : "connection error");
        return;
    }
    if (b == 0x16) {
        start_accept_tls(c);
        if (c->state == MT_CONN_TLS)
            step_tls(c);
        return;
    }
    if (!c->l->o.ops->on_plaintext) {
        mt_conn_close(c, "plaintext on a TLS port");
        return;
    }
    c->state = MT_CONN_PROTO;
    c->l->o.ops->on_plaintext(c);
}

static void conn_step(struct mt_conn *c)
{
    const struct mt_proto_ops *ops = c->l->o.ops;
    int again = 0;
    enum mt_conn_state was = c->state;
    switch (c->state) {
    case MT_CONN_SNIFF: step_sniff(c); break;
    case MT_CONN_TLS: step_tls(c); break;
    case MT_CONN_PROTO: again = ops->on_io(c); break;
    case MT_CONN_CLOSED: return;
    }
    /* entering the protocol may have bytes to move right away (buffered by OpenSSL) */
    if (was != MT_CONN_PROTO && c->state == MT_CONN_PROTO)
        again = ops->on_io(c);
    if (again)
        mt_conn_again(c);
}

/* ---- accepting ---------------------------------------------------------------- */

static void listener_unwatch(struct mt_worker *w, struct mt_listener *l)
{
    if (w->listening[l->idx]) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, l->fd, NULL);
        w->listening[l->idx] = 0;
    }
}

/* Once per episode, and at most once a minute when episodes follow each other. */
static int log_once(atomic_int *flag, atomic_llong *last_ms)
{
    int64_t t = mt_now_ms();
    long long last = atomic_load(last_ms);
    int was = 0;
    if (atomic_compare_exchange_strong(flag, &was, 1) && (last == 0 || t - last >= 60000) &&
        atomic_compare_exchange_strong(last_ms, &last, t)) {
        atomic_store(flag, 2);
        return 1;
    }
    return 0;
}

static void accept_batch(struct mt_worker *w, struct mt_listener *l)
{
    for (int i = 0; i < MT_STEP_ACCEPT_MAX; i++) {
        if (atomic_load(&l->st.active) >= l->o.max_conns) {
            if (log_once(&l->max_logged, &l->max_logged_ms))
                meshtls_log(MESHTLS_LOG_WARN,
                            "%s %s: max-conns %d reached: new connections wait in the backlog "
                            "until one closes",
                            l->o.name, l->addr, l->o.max_conns);
            listener_unwatch(w, l);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == ECONNABORTED || e == EINTR)
                continue; /* that client gave up: try the next one */
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* The clients stay in the backlog, so the level-triggered listener would be
                 * reported again at once: without a pause every core spins on failing
                 * accept4() calls.  Stop watching it for a while, as nginx and HAProxy do;
                 * connections closing meanwhile free descriptors. */
                listener_unwatch(w, l);
                w->paused_until[l->idx] = mt_now_ms() + MT_ACCEPT_PAUSE_MS;
                atomic_fetch_add(&l->st.accept_paused, 1);
                if (log_once(&l->fd_logged, &l->fd_logged_ms))
                    meshtls_log(MESHTLS_LOG_ERROR,
                                "%s %s: cannot accept new connections: %s; the listener pauses "
                                "%d ms at a time until descriptors are free (raise the limit "
                                "with `ulimit -n` or LimitNOFILE=, or lower --max-conns)",
                                l->o.name, l->addr, strerror(e), MT_ACCEPT_PAUSE_MS);
            }
            return; /* EAGAIN: another worker took it, or the batch is done */
        }
        if (atomic_load(&l->fd_logged) && atomic_exchange(&l->fd_logged, 0) == 2)
            meshtls_log(MESHTLS_LOG_INFO, "%s %s: accepting new connections again", l->o.name,
                        l->addr);
        struct mt_conn *c = calloc(1, sizeof(*c) + l->o.ops->proto_size);
        if (!c) {
            close(fd);
            continue;
        }
        atomic_fetch_add(&l->st.active, 1);
        atomic_fetch_add(&l->st.accepted, 1);
        c->l = l;
        c->w = w;
        c->id = atomic_fetch_add_explicit(&w->e->next_id, 1, memory_order_relaxed) + 1;
        c->down = (struct mt_end){.c = c, .fd = fd, .is_down = 1};
        c->up = (struct mt_end){.c = c, .fd = -1};
        c->start_us = mt_now_us();
        c->state = MT_CONN_PROTO;
        c->snap = mt_snap_acquire(l->o.snap);
        memcpy(&c->peer_sa, &ss, sl < sizeof(c->peer_sa) ? sl : sizeof(c->peer_sa));
        mt_addr_str((struct sockaddr *)&ss, c->peer_addr, sizeof(c->peer_addr));
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        if (mt_conn_watch(c, &c->down) != 0) {
            mt_conn_close(c, "epoll_ctl failed");
            continue;
        }
        if (l->o.ops->on_accept && l->o.ops->on_accept(c) != 0) {
            mt_conn_close(c, "refused at accept");
            continue;
        }
        if (c->state == MT_CONN_CLOSED)
            continue;
        if (l->o.tls && l->o.sniff_plaintext) {
            c->state = MT_CONN_SNIFF;
            mt_conn_set_timeout(c, l->o.handshake_timeout_ms);
        } else if (l->o.tls) {
            start_accept_tls(c);
        }
        /* a plain listener's connection is in MT_CONN_PROTO: its first event runs on_io */
    }
}

static void sweep_timeouts(struct mt_worker *w)
{
    int64_t now = mt_now_ms();
    for (struct mt_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline_ms > now || c->deadline_ms == 0)
            continue;
        const struct mt_proto_ops *ops = c->l->o.ops;
        if (c->state == MT_CONN_TLS || c->state == MT_CONN_SNIFF) {
            ops->on_tls_error(c, c->state == MT_CONN_TLS ? c->hs : &c->down, 1);
            mt_conn_close(c, "TLS handshake timeout");
        } else if (ops->on_timeout) {
            ops->on_timeout(c);
        } else {
            mt_conn_close_clean(c, "idle timeout");
        }
    }
}

/* ---- jobs ------------------------------------------------------------------- */

int mt_job_submit(struct mt_conn *c, struct mt_job *j)
{
    struct mt_engine *e = c->w->e;
    pthread_mutex_lock(&e->jmu);
    int cap = e->o.job_queue > 0 ? e->o.job_queue : 1024;
    if (e->njth == 0 || e->jqueued >= cap || e->jstop) {
        pthread_mutex_unlock(&e->jmu);
        return MESHTLS_ENOMEM;
    }
    j->c = c;
    j->next = NULL;
    if (e->jtail)
        e->jtail->next = j;
    else
        e->jhead = j;
    e->jtail = j;
    e->jqueued++;
    c->jobs++;
    c->w->jobs_out++;
    pthread_cond_signal(&e->jcv);
    pthread_mutex_unlock(&e->jmu);
    return 0;
}

static void *job_thread(void *arg)
{
    struct mt_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->jmu);
        while (!e->jhead && !e->jstop)
            pthread_cond_wait(&e->jcv, &e->jmu);
        struct mt_job *j = e->jhead;
        if (!j) { /* stopping, and nothing queued */
            pthread_mutex_unlock(&e->jmu);
            return NULL;
        }
        e->jhead = j->next;
        if (!e->jhead)
            e->jtail = NULL;
        e->jqueued--;
        pthread_mutex_unlock(&e->jmu);
        j->work(j);
        /* back to the connection's worker: j->c is only read here, never dereferenced
         * for anything but finding the worker, which outlives every job */
        struct mt_worker *w = j->c->w;
        pthread_mutex_lock(&w->done_mu);
        j->next = w->done;
        w->done = j;
        pthread_mutex_unlock(&w->done_mu);
        uint64_t one = 1;
        ssize_t wr = write(w->wake.fd, &one, sizeof(one));
        (void)wr; /* a full eventfd counter still wakes the worker */
    }
}

static void jobs_complete(struct mt_worker *w)
{
    uint64_t n;
    ssize_t rd = read(w->wake.fd, &n, sizeof(n));
    (void)rd;
    pthread_mutex_lock(&w->done_mu);
    struct mt_job *list = w->done, *fifo = NULL;
    w->done = NULL;
    pthread_mutex_unlock(&w->done_mu);
    while (list) { /* oldest first */
        struct mt_job *nx = list->next;
        list->next = fifo;
        fifo = list;
        list = nx;
    }
    while (fifo) {
        struct mt_job *j = fifo;
        fifo = j->next;
        struct mt_conn *c = j->c;
        j->done(j); /* may free j */
        c->jobs--;
        w->jobs_out--;
        if (c->state == MT_CONN_CLOSED && c->jobs == 0)
            queue_free(w, c);
    }
}

/* ---- the worker loop ------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct mt_worker *w = arg;
    struct mt_engine *e = w->e;
    struct epoll_event evs[MT_EVENTS];
    int64_t last_sweep = mt_now_ms();
    w->now_ms = last_sweep;
    for (;;) {
        int stop = atomic_load(&e->stopping);
        for (int i = 0; i < e->nls; i++) {
            struct mt_listener *l = e->ls[i];
            if (stop)
                listener_unwatch(w, l);
            else if (!w->listening[i] && atomic_load(&l->st.active) < l->o.max_conns &&
                     w->now_ms >= w->paused_until[i]) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = l};
                if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->fd, &ev) == 0)
                    w->listening[i] = 1;
            }
        }
        /* draining: close at once what is not waited for; at the timeout (2) the rest,
         * then exit to be joined */
        for (struct mt_conn *c = stop ? w->conns : NULL, *nx; c; c = nx) {
            nx = c->next;
            if (stop == 2 || c->l->o.drain_close)
                mt_conn_close_clean(c, stop == 2 ? "shutdown timeout" : "shutting down");
        }
        if (stop && !w->conns && !w->freeing && !w->jobs_out)
            break;
        int n = epoll_wait(w->epfd, evs, MT_EVENTS, w->ready ? 0 : 100);
        w->now_ms = mt_now_ms();
        for (int i = 0; i < n; i++) {
            uint8_t tag = *(const uint8_t *)evs[i].data.ptr;
            if (tag == MT_TAG_LISTENER) {
                if (!atomic_load(&e->stopping))
                    accept_batch(w, evs[i].data.ptr);
                continue;
            }
            if (tag == MT_TAG_WAKE) {
                jobs_complete(w);
                continue;
            }
            struct mt_end *en = evs[i].data.ptr;
            uint32_t ev = evs[i].events;
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                en->rd_ready = 1, en->drained = 0;
            if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                en->rdhup = 1;
            if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                en->wr_ready = 1;
            conn_step(en->c);
        }
        /* connections that yielded get another turn */
        struct mt_conn *r = w->ready;
        w->ready = NULL;
        while (r) {
            struct mt_conn *nx = r->ready_next;
            r->on_ready = 0;
            conn_step(r);
            r = nx;
        }
        int64_t now = w->now_ms;
        if (now - last_sweep >= 100) {
            sweep_timeouts(w);
            last_sweep = now;
        }
        while (w->freeing) {
            struct mt_conn *c = w->freeing;
            w->freeing = c->free_next;
            if (c->on_ready) { /* still on the ready list: unlink first */
                struct mt_conn **pp = &w->ready;
                while (*pp && *pp != c)
                    pp = &(*pp)->ready_next;
                if (*pp)
                    *pp = c->ready_next;
            }
            conn_free(c);
        }
    }
    return NULL;
}

/* ---- the engine ----------------------------------------------------------------- */

int mt_engine_new(const struct mt_engine_opts *o, struct mt_engine **out, struct meshtls_err *err)
{
    if (!o || o->workers < 1 || o->job_threads < 0 || o->job_queue < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "engine: workers must be at least 1 and job settings not negative");
    struct mt_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory creating the engine");
    e->o = *o;
    pthread_mutex_init(&e->jmu, NULL);
    pthread_cond_init(&e->jcv, NULL);
    *out = e;
    return 0;
}

int mt_engine_listen(struct mt_engine *e, const struct mt_listener_opts *o,
                     struct mt_listener **out, struct meshtls_err *err)
{
    if (e->nls >= MT_LISTENERS_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: more than %d listeners in one engine",
                               o->name, MT_LISTENERS_MAX);
    if (!o->ops || !o->ops->on_io || !o->snap || o->max_conns < 1 ||
        (o->tls && (!o->ops->on_tls_done || !o->ops->on_tls_error)))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s: listener needs a protocol with on_io (and TLS hooks for a TLS "
                               "listener), a snapshot holder and max_conns >= 1",
                               o->name);
    struct sockaddr_storage la;
    socklen_t ll;
    int rc = mt_resolve(o->addr, 1, &la, &ll, err);
    if (rc)
        return rc;
    struct mt_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    l->tag = MT_TAG_LISTENER;
    l->e = e;
    l->o = *o;
    int one = 1;
    l->fd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        /* accepted sockets inherit it: no setsockopt per connection */
        setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(l->fd, (struct sockaddr *)&la, ll) != 0 ||
        listen(l->fd, o->backlog > 0 ? o->backlog : 4096) != 0) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "%s: cannot listen on %s: %s", o->name, o->addr,
                             strerror(errno));
        if (l->fd >= 0)
            close(l->fd);
        free(l);
        return rc;
    }
    ll = sizeof(la);
    getsockname(l->fd, (struct sockaddr *)&la, &ll);
    mt_addr_str((struct sockaddr *)&la, l->addr, sizeof(l->addr));
    l->idx = e->nls;
    e->ls[e->nls++] = l;
    if (out)
        *out = l;
    return 0;
}

static void engine_join(struct mt_engine *e)
{
    if (e->joined)
        return;
    e->joined = 1;
    for (int i = 0; i < e->nw; i++)
        pthread_join(e->w[i].th, NULL);
    /* no worker runs, so none waits for a job: stop the pool */
    pthread_mutex_lock(&e->jmu);
    e->jstop = 1;
    pthread_cond_broadcast(&e->jcv);
    pthread_mutex_unlock(&e->jmu);
    for (int i = 0; i < e->njth; i++)
        pthread_join(e->jth[i], NULL);
    e->njth = 0;
}

int mt_engine_start(struct mt_engine *e, struct meshtls_err *err)
{
    int rc = 0;
    if (!(e->w = calloc((size_t)e->o.workers, sizeof(*e->w))) ||
        (e->o.job_threads && !(e->jth = calloc((size_t)e->o.job_threads, sizeof(*e->jth)))))
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory starting %d worker(s)",
                               e->o.workers);
    for (int i = 0; i < e->o.job_threads; i++) {
        if (pthread_create(&e->jth[i], NULL, job_thread, e) != 0) {
            rc = meshtls_err_set(err, MESHTLS_EIO, "cannot start job thread %d: %s", i,
                                 strerror(errno));
            goto fail;
        }
        e->njth++;
    }
    for (int i = 0; i < e->o.workers; i++) {
        struct mt_worker *w = &e->w[i];
        w->e = e;
        w->id = i;
        w->wake.tag = MT_TAG_WAKE;
        pthread_mutex_init(&w->done_mu, NULL);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->wake};
        if (w->epfd < 0 || w->wake.fd < 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake.fd, &ev) != 0 ||
            pthread_create(&w->th, NULL, worker_main, w) != 0) {
            rc =
                meshtls_err_set(err, MESHTLS_EIO, "cannot start worker %d: %s", i, strerror(errno));
            if (w->epfd >= 0)
                close(w->epfd);
            if (w->wake.fd >= 0)
                close(w->wake.fd);
            w->epfd = w->wake.fd = -1;
            goto fail;
        }
        e->nw++;
    }
    return 0;
fail:
    /* stop and join whatever started, so the caller may free what those threads read */
    atomic_store(&e->stopping, 2);
    engine_join(e);
    return rc;
}

int mt_engine_drain(struct mt_engine *e, int timeout_ms, long long *left)
{
    int drained = 1;
    if (left)
        *left = 0;
    if (!e->joined && e->nw) {
        atomic_store(&e->stopping, 1);
        /* Refuse new connections at once: a socket merely removed from epoll would still
         * complete TCP handshakes that nobody serves.  shutdown() makes the kernel refuse
         * (ECONNREFUSED: clients and load balancers retry elsewhere) and wakes the
         * workers, while the descriptor stays ours until every worker is joined. */
        for (int i = 0; i < e->nls; i++)
            shutdown(e->ls[i]->fd, SHUT_RDWR);
        int64_t deadline = mt_now_ms() + timeout_ms;
        while (drain_pending(e) > 0) {
            if (mt_now_ms() >= deadline) {
                drained = 0;
                if (left)
                    *left = drain_pending(e);
                break;
            }
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (!drained)
            atomic_store(&e->stopping, 2);
    }
    engine_join(e);
    return drained;
}

void mt_engine_free(struct mt_engine *e)
{
    if (!e)
        return;
    if (e->nw && !e->joined) {
        atomic_store(&e->stopping, 2);
        engine_join(e);
    }
    for (int i = 0; i < e->nw; i++) {
        close(e->w[i].epfd);
        close(e->w[i].wake.fd);
        for (int k = 0; k < e->w[i].pool_n; k++)
            free(e->w[i].pool[k]);
        pthread_mutex_destroy(&e->w[i].done_mu);
    }
    free(e->w);
    free(e->jth);
    for (int i = 0; i < e->nls; i++) {
        close(e->ls[i]->fd);
        free(e->ls[i]);
    }
    pthread_mutex_destroy(&e->jmu);
    pthread_cond_destroy(&e->jcv);
    free(e);
}

enum mt_line_result mt_conn_read_line(struct mt_conn *c, struct mt_linebuf *lb, size_t cap)
{
    if (cap > sizeof(lb->buf))
        cap = sizeof(lb->buf);
    for (;;) {
        char *nl = memchr(lb->buf, '\n', lb->have);
        if (nl) {
            lb->len = (size_t)(nl - lb->buf) + 1;
            return MT_LINE_DONE;
        }
        if (lb->have >= cap)
            return MT_LINE_TOO_LONG;
        if (!c->down.rd_ready)
            return MT_LINE_AGAIN;
        ssize_t n = mt_end_read(&c->down, lb->buf + lb->have, cap - lb->have);
        if (n == 0)
            return MT_LINE_EOF;
        if (n == -1)
            return MT_LINE_AGAIN;
        if (n < 0)
            return MT_LINE_ERROR;
        lb->have += (size_t)n;
    }
}
