/*
 * net.h - the protocol-neutral engine every meshtls server stands on.
 *
 * An engine owns worker threads (one epoll loop each), the listeners they share
 * (EPOLLEXCLUSIVE: one worker wakes per new connection and accepts a batch), the
 * connections each worker accepted, and a bounded job pool for work that blocks.
 * It knows sockets, TLS handshakes, timers, limits and the drain; it knows
 * nothing of what the bytes mean.  A protocol (struct mt_proto_ops, as HAProxy's
 * xprt_ops or Redis's ConnectionType) says what happens at each step: the relay
 * of `meshtls proxy` is one (src/proxy/relay.c), the HTTP server layer another.
 *
 * Threads and ownership:
 *   - a connection belongs to the worker that accepted it: every hook runs on that
 *     worker's thread, and nothing else touches the connection;
 *   - job work functions run on a pool thread and must not touch the connection;
 *     their done functions run back on the owning worker (eventfd wake-up);
 *   - listeners, the engine and the snapshot holders are shared: set up before
 *     mt_engine_start(), read-only after, except the holders' published pointer.
 *
 * Reload: each listener has a snapshot holder (struct mt_snap_holder).  A
 * snapshot is everything a new connection reads (TLS context, and whatever the
 * protocol embeds: policy, target, timeouts), immutable once published and
 * refcounted.  A connection takes a reference when it is accepted and keeps that
 * snapshot until it is freed; a reload publishes a new one with one pointer swap.
 *
 * Errors follow include/meshtls/err.h: 0 or a negative MESHTLS_E* code, with an
 * optional struct meshtls_err saying what and where.
 */
#ifndef MESHTLS_NET_H
#define MESHTLS_NET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "meshtls/err.h"

#define MT_BUF 65536           /* size of a pooled I/O buffer (mt_buf_get) */
#define MT_LISTENERS_MAX 8     /* listeners per engine */
#define MT_ACCEPT_PAUSE_MS 100 /* out of descriptors: a listener is left alone this long */

struct mt_engine;
struct mt_worker;
struct mt_listener;
struct mt_conn;

/* ---- snapshots -------------------------------------------------------------------- */

/**
 * The immutable state new connections of a listener start with.  Protocols embed it
 * as the first member of their own snapshot struct and give `destroy`, which frees
 * the whole struct (ctx included) when the last reference goes.
 */
struct mt_snap {
    atomic_long refs;
    SSL_CTX *ctx;        /* server context of a TLS listener (owned), or NULL */
    int64_t not_after;   /* the certificate's expiry (Unix seconds), 0 if none */
    uint64_t generation; /* set by mt_snap_publish: 1, 2, ... */
    void (*destroy)(struct mt_snap *s);
};

/** A published snapshot: one pointer, swapped whole by a reload. */
struct mt_snap_holder {
    pthread_mutex_t mu;
    struct mt_snap *cur;
    uint64_t generation;
};

/** Initialise an empty holder (static storage may use MT_SNAP_HOLDER_INIT). */
#define MT_SNAP_HOLDER_INIT                                                                        \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, NULL, 0                                                         \
    }
/** Initialise `s` with one reference (the caller's) and `destroy`. */
void mt_snap_init(struct mt_snap *s, void (*destroy)(struct mt_snap *s));
/** @return the current snapshot with a new reference the caller releases, or NULL. */
struct mt_snap *mt_snap_acquire(struct mt_snap_holder *h);
/** Drop one reference; the last one calls destroy.  NULL is ignored. */
void mt_snap_release(struct mt_snap *s);
/**
 * Publish `s` (takes the caller's reference) in place of the current snapshot, whose
 * holder reference is dropped: connections that hold it keep it until they end.
 */
void mt_snap_publish(struct mt_snap_holder *h, struct mt_snap *s);
/** Release the holder's snapshot (at shutdown, once no worker runs). */
void mt_snap_holder_clear(struct mt_snap_holder *h);

/* ---- ends: one socket of a connection, plain or TLS ---------------------------------- */

enum { MT_TAG_END = 1, MT_TAG_LISTENER, MT_TAG_WAKE }; /* epoll data: the first byte says what */

/*
 * Each end remembers what the kernel last told it (rd_ready, wr_ready): an event sets
 * the flag, and a read or write that proves the socket empty or full clears it (EAGAIN,
 * OpenSSL's WANT_READ/WANT_WRITE, or a short read/write on a plain TCP socket), so a
 * protocol calls read/write only on an end whose flag is set: one read per socket per
 * request instead of a read plus EAGAIN probes.
 */
struct mt_end {
    uint8_t tag; /* MT_TAG_END */
    struct mt_conn *c;
    int fd;
    SSL *ssl;         /* a TLS end has one (owned) */
    int rd_eof;       /* no more bytes will come from this end */
    int wr_shut;      /* we have shut down writing towards this end */
    int shut_pending; /* close_notify queued in OpenSSL, not yet on the wire */
    int is_down;      /* the accepted (client) end */
    int rd_ready;     /* a read may make progress */
    int wr_ready;     /* a write may make progress */
    int drained;      /* TLS end: OpenSSL's last read(2) since the last event came back short */
    int rdhup;        /* the peer's FIN (or an error) arrived: read until EOF */
    unsigned long last_err; /* TLS end: OpenSSL's error at the last -2 (e.g. a peer's alert) */
};

/** Read up to `n` bytes.  @return >0 bytes, 0 end of stream, -1 would block, -2 error. */
ssize_t mt_end_read(struct mt_end *e, char *buf, size_t n);
/** Write up to `n` bytes.  @return >0 bytes written, -1 would block, -2 error. */
ssize_t mt_end_write(struct mt_end *e, const char *buf, size_t n);
/** Half-close towards `e`: close_notify on TLS (flushed later if the socket is full), FIN. */
void mt_end_shut_write(struct mt_end *e);
/** Flush a close_notify that mt_end_shut_write() could not send at once. */
void mt_end_flush_shutdown(struct mt_end *e);
/**
 * Give `e` the TLS connection `ssl` over its socket (`ssl` is owned by `e` from here,
 * even on failure).  @return 0, or -1 if BIOs could not be made.
 */
int mt_end_tls_attach(struct mt_end *e, SSL *ssl);
/** Empty OpenSSL's error queue if it holds anything (SSL_get_error needs it empty). */
void mt_clear_ssl_errors(void);

/* ---- connections ----------------------------------------------------------------- */

enum mt_conn_state {
    MT_CONN_SNIFF = 1, /* TLS listener with sniff_plaintext: waiting for the first byte */
    MT_CONN_TLS,       /* the engine runs a TLS handshake on `hs` */
    MT_CONN_PROTO,     /* the protocol's on_io makes progress */
    MT_CONN_CLOSED,    /* waiting to be freed after the current batch of events */
};

/*
 * A connection: the accepted end (`down`), an optional second end the protocol opens
 * (`up`, fd -1 until then), and the protocol's own state right after this struct
 * (mt_conn_proto(), `proto_size` bytes, zeroed).  Fields are read and written only on
 * the owning worker's thread.
 */
struct mt_conn {
    struct mt_end down, up;
    struct mt_end *hs; /* the end whose handshake runs in MT_CONN_TLS */
    enum mt_conn_state state;
    struct mt_listener *l;
    struct mt_worker *w;
    struct mt_snap *snap; /* the snapshot this connection started with (a reference) */
    uint64_t id;          /* unique within the engine, from 1: the `conn` of log lines */
    int64_t start_us;     /* monotonic, at accept */
    int64_t deadline_ms;  /* monotonic: on_timeout (or a handshake timeout) after this; 0 none */
    int on_ready;
    int jobs;   /* jobs submitted and not yet done: the connection is not freed before */
    int tls_in; /* the handshake in MT_CONN_TLS is the accepted end's (server side) */
    struct mt_conn *next, *prev, *ready_next, *free_next;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer_sa;
    char peer_addr[64]; /* "ip:port" / "[ip6]:port" of the client */
    _Alignas(max_align_t) unsigned char proto[];
};

/** The protocol's state of `c` (proto_size bytes). */
static inline void *mt_conn_proto(struct mt_conn *c)
{
    return c->proto;
}

/** Monotonic milliseconds as of the owning worker's last wake-up (no syscall). */
int64_t mt_conn_now_ms(const struct mt_conn *c);
/** Monotonic clock, milliseconds / microseconds. */
int64_t mt_now_ms(void);
int64_t mt_now_us(void);
/** The index of the worker that owns `c` (0 .. workers - 1): a metrics shard. */
unsigned mt_conn_shard(const struct mt_conn *c);
/** The listener's protocol argument (mt_listener_opts.arg). */
void *mt_conn_listener_arg(const struct mt_conn *c);
/** Whether the listener of `c` runs TLS (mt_listener_opts.tls). */
int mt_conn_listener_tls(const struct mt_conn *c);
/** The listener's name (mt_listener_opts.name). */
const char *mt_conn_listener_name(const struct mt_conn *c);

/**
 * Set the deadline `ms` from now; on_timeout runs when it passes (checked every 100 ms).
 * `ms` <= 0 clears it: a new connection has none until the listener's handshake (TLS)
 * or the protocol sets one.
 */
void mt_conn_set_timeout(struct mt_conn *c, int ms);
/**
 * Close `c` now: state MT_CONN_CLOSED, on_close runs (log and account there), sockets and
 * TLS objects are freed after the current batch of events and after its jobs are done.
 * `why` (static or owned by the protocol until on_close returns) is passed to on_close.
 * Closing a closed connection does nothing.
 */
void mt_conn_close(struct mt_conn *c, const char *why);
/**
 * Close a connection whose peer did nothing wrong (idle timeout, the target failed):
 * close_notify first on every TLS end past its handshake, so the peer reads a clean
 * end of stream and OpenSSL keeps the session resumable.
 */
void mt_conn_close_clean(struct mt_conn *c, const char *why);
/** Watch end `e` (a socket the protocol opened, e.g. `up`) on the owning worker's loop. */
int mt_conn_watch(struct mt_conn *c, struct mt_end *e);
/**
 * Start a TLS handshake on end `e` with `ssl` (owned by `e` from here, also on failure):
 * the connection enters MT_CONN_TLS, and on_tls_done or on_tls_error runs when it ends.
 * `client`: we connect (SSL_set_connect_state), else accept.  The deadline becomes
 * `timeout_ms` from now.  @return 0, or -1 (the connection is closed).
 */
int mt_conn_start_tls(struct mt_conn *c, struct mt_end *e, SSL *ssl, int client, int timeout_ms);
/** Go back to (or stay in) the protocol state: on_io runs on the next event. */
void mt_conn_set_proto(struct mt_conn *c);
/** Ask for on_io to run again after this round of events, without a new event. */
void mt_conn_again(struct mt_conn *c);

/** A pooled MT_BUF-byte buffer of the owning worker (NULL when out of memory). */
char *mt_buf_get(struct mt_conn *c);
/** Give `b` (from mt_buf_get, or NULL) back to the owning worker's pool. */
void mt_buf_put(struct mt_conn *c, char *b);

/**
 * Read one line ending in '\n' from the accepted end into lb (bounded by `cap` bytes,
 * line included).  Bytes after the newline stay in lb->buf[lb->len ..lb->have) for the
 * protocol to take (they were read with the line).
 */
struct mt_linebuf {
    char buf[512];
    size_t have; /* bytes in buf */
    size_t len;  /* length of the complete line, '\n' included; 0 until found */
};
enum mt_line_result {
    MT_LINE_DONE = 0,      /* lb->buf[0 .. lb->len) is the line */
    MT_LINE_AGAIN = 1,     /* no newline yet: wait for the next event */
    MT_LINE_TOO_LONG = -1, /* `cap` bytes without a newline */
    MT_LINE_EOF = -2,      /* the peer closed before the newline */
    MT_LINE_ERROR = -3,    /* read error */
};
enum mt_line_result mt_conn_read_line(struct mt_conn *c, struct mt_linebuf *lb, size_t cap);

/* ---- jobs: blocking work off the event loops ------------------------------------- */

/*
 * A job is embedded by the caller in its own struct (container_of style) and owned by
 * the caller throughout.  work() runs on a pool thread and must not touch the
 * connection; done() runs afterwards on the connection's worker.  If the connection
 * was closed meanwhile, done() still runs (check mt_conn_closed) and the connection is
 * freed only after it: the caller frees its job state in done() either way.
 */
struct mt_job {
    void (*work)(struct mt_job *j);
    void (*done)(struct mt_job *j);
    struct mt_conn *c;
    struct mt_job *next;
};

/**
 * Queue `j` for `c` (j->work and j->done set by the caller).
 * @return 0, or MESHTLS_ENOMEM when the queue is full (bounded: mt_engine_opts.job_queue;
 *         nothing was queued, the caller answers "busy").
 */
int mt_job_submit(struct mt_conn *c, struct mt_job *j);
/** Whether `c` was closed (for job done functions). */
static inline int mt_conn_closed(const struct mt_conn *c)
{
    return c->state == MT_CONN_CLOSED;
}

/* ---- protocols --------------------------------------------------------------------- */

/*
 * What a protocol does at each step of a connection.  Every hook runs on the
 * connection's worker; any may call mt_conn_close (then the engine stops calling
 * hooks except on_close).  NULL hooks are allowed where noted.
 */
struct mt_proto_ops {
    const char *name;
    size_t proto_size; /* bytes of per-connection state after struct mt_conn */
    /*
     * Accepted: c->down is a socket (and, on a TLS listener, the handshake has not
     * begun).  Return 0 to go on: a TLS listener starts the handshake, a plain one
     * enters MT_CONN_PROTO.  NULL: nothing to do.
     */
    int (*on_accept)(struct mt_conn *c);
    /*
     * A TLS listener with `sniff_plaintext` saw a first byte that cannot start a TLS
     * record (anything but 0x16): the connection is in MT_CONN_PROTO with no SSL on
     * `down`; the protocol reads and answers in plaintext (e.g. HTTP 400/403) from
     * on_io.  NULL: the connection is closed with "plaintext on a TLS port".
     */
    void (*on_plaintext)(struct mt_conn *c);
    /* A handshake ended well on `e` (mt_conn_start_tls or the listener's). */
    void (*on_tls_done)(struct mt_conn *c, struct mt_end *e);
    /*
     * A handshake failed on `e`: `timeout` non-zero if its deadline passed.  Log and
     * count here; the engine closes the connection afterwards if the hook did not.
     */
    void (*on_tls_error)(struct mt_conn *c, struct mt_end *e, int timeout);
    /*
     * Readable or writable ends (see the flags of struct mt_end): make all the progress
     * possible.  @return 1 to be called again without an event (stopped early for
     * fairness), else 0.
     */
    int (*on_io)(struct mt_conn *c);
    /* The deadline passed in MT_CONN_PROTO.  NULL: close with "idle timeout". */
    void (*on_timeout)(struct mt_conn *c);
    /*
     * The connection closes (`why` from mt_conn_close, may be NULL): log, account, and
     * free the protocol's state (pooled buffers included).  Sockets and SSLs are the
     * engine's.  NULL allowed.
     */
    void (*on_close)(struct mt_conn *c, const char *why);
};

/* ---- listeners and the engine ---------------------------------------------------- */

struct mt_listener_opts {
    const char *name; /* for logs: "proxy", "status", "api" (borrowed, must outlive) */
    const char *addr; /* "host:port", "[v6]:port", ":port" (borrowed) */
    const struct mt_proto_ops *ops;
    void *arg;                   /* the protocol's, for mt_conn_listener_arg */
    struct mt_snap_holder *snap; /* required; with a ctx in its snapshots for TLS */
    int tls;                     /* accept TLS: handshake with snap->ctx after on_accept */
    int sniff_plaintext;         /* TLS: peek the first byte, on_plaintext if not TLS */
    int max_conns;               /* simultaneous connections on this listener (> 0) */
    int handshake_timeout_ms;    /* TLS, and the time to the first byte when sniffing */
    int backlog;                 /* listen(2) backlog; 0 = 4096 */
    int drain_close;             /* at a drain, close these connections at once (status,
                                  * keep-alive probes) rather than wait for them */
};

struct mt_engine_opts {
    int workers;     /* event-loop threads (>= 1) */
    int job_threads; /* pool threads for mt_job_submit; 0 = no pool (submit fails) */
    int job_queue;   /* queued jobs at most; 0 = 1024 */
};

/** Counters of one listener (read with atomic loads by the metrics code). */
struct mt_listener_stats {
    atomic_llong active;         /* open connections */
    atomic_ullong accepted;      /* connections accepted */
    atomic_ullong accept_paused; /* pauses: out of file descriptors (EMFILE/ENFILE) */
};

/**
 * Create an engine (no threads yet).
 * @param out new engine, freed with mt_engine_free; written only on success.
 */
int mt_engine_new(const struct mt_engine_opts *o, struct mt_engine **out, struct meshtls_err *err);
/**
 * Bind a listener (before mt_engine_start).  The engine owns the socket; `o` is copied,
 * the strings and the holder it points to must outlive the engine.
 * @param out the listener (owned by the engine), may be NULL.
 */
int mt_engine_listen(struct mt_engine *e, const struct mt_listener_opts *o,
                     struct mt_listener **out, struct meshtls_err *err);
/** The bound address of `l` as text ("127.0.0.1:4433"): port 0 resolved. */
const char *mt_listener_addr(const struct mt_listener *l);
/** The counters of `l` (owned by the engine). */
struct mt_listener_stats *mt_listener_stats(struct mt_listener *l);
/** Start the workers and the job pool.  On failure everything started is stopped. */
int mt_engine_start(struct mt_engine *e, struct meshtls_err *err);
/**
 * Stop accepting (listeners are shut down: new clients get ECONNREFUSED at once), wait
 * up to `timeout_ms` for open connections to finish, then close what is left and join
 * every thread.  @return 1 if every connection finished in time, 0 if some were closed
 * (`*left`, if not NULL, gets how many were open at the timeout).
 */
int mt_engine_drain(struct mt_engine *e, int timeout_ms, long long *left);
/** Open connections on all listeners. */
long long mt_engine_active(struct mt_engine *e);
/** Free the engine (after mt_engine_drain, or if it never started). NULL is ignored. */
void mt_engine_free(struct mt_engine *e);

/** Resolve "host:port" ("[v6]:port", ":port" = all interfaces).  Blocking (getaddrinfo). */
int mt_resolve(const char *hostport, int passive, struct sockaddr_storage *out, socklen_t *len,
               struct meshtls_err *err);
/** Format `sa` as "ip:port" / "[ip6]:port". */
void mt_addr_str(const struct sockaddr *sa, char *buf, size_t cap);
/** Is `sa` a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)? */
int mt_is_loopback(const struct sockaddr_storage *sa);

#endif
