/*
 * router.h - `meshtls proxy router`: the mTLS bastion of 004 (docs/ROUTER.md).
 *
 * People hold certificates whose SPIFFE ID is spiffe://<issuer>/orgs/<org>/users/<user>.
 * A client sends `<connect_id>\n`; the router looks the host up in the database shared
 * with an ssh-router (tables backend_hosts, teams, users), decides with 004's rule, and
 * answers `OK\n` and relays bytes to the host's internal_ip_addr, or answers
 * `ERROR: <code> <message>\n` and closes.
 *
 * Pieces:
 *   router_authz.c  pure logic: SPIFFE user IDs, the connect-id line, array columns, the
 *                   decision (no I/O: unit-tested as tables)
 *   router_db.c     schema migrations and the lookup queries (blocking: job threads only)
 *   router.c        the protocol on the engine (struct mt_proto_ops)
 *   router_run.c    rt_run: the engine, listeners, signals, CRL reloads
 *   router_watch.c  the watcher thread: database changes flush the decision cache and
 *                   tell live relays to check again (docs/ROUTER.md, "Invalidation"); it
 *                   also shares the limits' counts with the other routers
 *   router_limits.c per-user and per-organisation limits, counted here and added to the
 *                   other routers' sums (docs/ROUTER.md, "Limits")
 */
#ifndef MESHTLS_ROUTER_H
#define MESHTLS_ROUTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/x509.h>

#include "db.h"
#include "meshtls/config.h"
#include "meshtls/err.h"
#include "meshtls/tls.h"
#include "metrics.h"
#include "net.h"

#define RT_ID_MAX 128         /* longest org / user / team id accepted from a certificate */
#define RT_CONNECT_ID_MAX 253 /* longest connect id (bytes, before the newline) */
#define RT_DEFAULT_PORT 22    /* internal_ip_addr without a port: ssh */
#define RT_ARRAY_MAX 4096     /* elements of a user_ids / team_ids array considered */

/*
 * The fixed set of refusal codes (the `<code>` of `ERROR: <code> <message>`); the
 * messages are fixed too.  RT_NOT_FOUND covers an unknown connect id AND a host of
 * another organisation: the two must look the same.
 */
enum rt_code {
    RT_OK = 0,
    RT_BAD_IDENTITY,        /* the certificate is not a user SVID of the configured issuer */
    RT_BAD_REQUEST,         /* the line is empty, too long, or has characters not allowed */
    RT_TIMEOUT,             /* the line did not arrive in time */
    RT_NOT_FOUND,           /* no such connect id in your organisation */
    RT_FORBIDDEN,           /* a host of your organisation you are not granted */
    RT_AUTHZ_UNAVAILABLE,   /* the database did not answer in time, or failed */
    RT_BACKEND_UNAVAILABLE, /* the host's address is bad, or it refused / did not answer */
    RT_BUSY,                /* the router is overloaded (job queue full) */
    RT_RATE_LIMITED,        /* too many connection attempts by this user or organisation */
    RT_TOO_MANY_SESSIONS,   /* too many open sessions of this user or organisation */
    RT_REVOKED,             /* the client certificate is on the CRL (--crl) */
    RT_CODE_N
};

/** The code's wire name ("not-found"). */
const char *rt_code_name(enum rt_code c);
/** The whole answer line for `c`: "ERROR: not-found no such host\n" (static). */
const char *rt_code_line(enum rt_code c);

/* ---- pure logic (router_authz.c) ------------------------------------------------------ */

/**
 * Parse a SPIFFE ID (the library's parser) that must be
 * spiffe://<issuer>/orgs/<org>/users/<user> with `issuer` as its trust domain.
 * org and user: 1..RT_ID_MAX bytes of [A-Za-z0-9._-] (SPIFFE path characters).
 * @param org, user buffers of RT_ID_MAX + 1 bytes; written only on success.
 * @return 0, or MESHTLS_EINVAL with `err` saying why (for the audit log).
 */
int rt_identity_parse(const char *spiffe_id, const char *issuer, char *org, char *user,
                      struct meshtls_err *err);

/**
 * Check the connect-id line `line` of `n` bytes (newline excluded; one trailing '\r' is
 * dropped).  Allowed: 1..RT_CONNECT_ID_MAX bytes of [A-Za-z0-9._~:@+-].
 * @param out RT_CONNECT_ID_MAX + 1 bytes; written only on success.
 * @return RT_OK or RT_BAD_REQUEST.
 */
enum rt_code rt_connect_id_check(const char *line, size_t n, char *out);

/**
 * Split an array column as the database returns it: a PostgreSQL array literal
 * ({a,"b c",NULL}) or a JSON array of strings (["a","b c"]; SQLite).  NULL and empty
 * elements are skipped.
 * @param out new array of new strings (free with rt_strv_free), `*n` elements.
 * @return 0, MESHTLS_EINVAL if `text` is neither form, MESHTLS_ENOMEM.
 */
int rt_array_parse(const char *text, char ***out, size_t *n);
void rt_strv_free(char **v, size_t n);

/** A host as the decision reads it (borrowed strings). */
struct rt_host {
    const char *org_id;
    const char *const *user_ids;
    size_t n_user_ids;
    const char *const *team_ids;
    size_t n_team_ids;
};

/** A team as the decision reads it (borrowed strings). */
struct rt_team {
    const char *team_id;
    const char *org_id;
    const char *const *user_ids;
    size_t n_user_ids;
};

/**
 * 004's rule.  `host` NULL: no such connect id.  Allowed when the host is in the user's
 * organisation and the user is in host->user_ids, or in a team of `teams` whose id is in
 * host->team_ids and whose organisation is the host's.
 * @return RT_OK, RT_NOT_FOUND (no host, or another organisation's), RT_FORBIDDEN.
 * @param via if not NULL, set to "user" or the team id that granted (borrowed).
 */
enum rt_code rt_authz_decide(const struct rt_host *host, const struct rt_team *teams,
                             size_t n_teams, const char *org, const char *user, const char **via);

/**
 * Turn internal_ip_addr ("10.0.0.5", "10.0.0.5:2222", "[fd00::5]:22", "fd00::5",
 * "host.internal:22") into "host:port" for mt_resolve, with RT_DEFAULT_PORT when none.
 * @return 0, or MESHTLS_EINVAL (empty, too long, a bad port).
 */
int rt_backend_addr(const char *addr, char *out, size_t cap);

/* ---- the database (router_db.c): blocking, job threads or commands only ---------------- */

/**
 * Create 004's tables if they are missing (an existing ssh-router database is used as it
 * is) and check that the columns the router reads are there with usable types.
 */
int rt_db_migrate(struct mt_db *db, struct meshtls_err *err);

/** The verdict of one lookup. */
struct rt_lookup {
    enum rt_code code;
    char addr[300]; /* "host:port" to connect to, when RT_OK */
    char via[RT_ID_MAX + 8];
};

/**
 * Look `connect_id` up for org/user and decide (two queries on one pooled connection).
 * @return 0 with `out` filled (code RT_OK / RT_NOT_FOUND / RT_FORBIDDEN /
 *         RT_BACKEND_UNAVAILABLE for an unusable address), or a MESHTLS_E* code (the
 *         database failed: the caller answers RT_AUTHZ_UNAVAILABLE).
 */
int rt_db_lookup(struct mt_db *db, const char *connect_id, const char *org, const char *user,
                 struct rt_lookup *out, struct meshtls_err *err);

/** The change counter (router_changes.version): a successful read is also a ping. */
int rt_db_version(struct mt_db *db, int64_t *out, struct meshtls_err *err);
/** rt_db_version on a connection the caller holds (the watcher's listening one). */
int rt_db_version_conn(struct mt_db_conn *c, int64_t *out, struct meshtls_err *err);
/**
 * Move the change counter on (and, on PostgreSQL, notify RT_DB_CHANNEL): running routers
 * drop their decision caches and re-check live relays at once (docs/ROUTER.md).
 */
int rt_db_bump(struct mt_db *db, struct meshtls_err *err);

/** The PostgreSQL channel the router's triggers notify and the watcher listens to. */
#define RT_DB_CHANNEL "meshtls_router"

/**
 * PostgreSQL: the data tables (backend_hosts, teams, users) that lack the router's change
 * trigger (created by migration 4 when the router's role owns the table), as one
 * comma-separated list in `missing` ("" when all have it).  SQLite: always "".
 */
int rt_db_triggers_missing(struct mt_db *db, char *missing, size_t cap, struct meshtls_err *err);

/** Whether the database answers a trivial query (readiness). */
int rt_db_ping(struct mt_db *db, struct meshtls_err *err);

/*
 * Limits shared between routers (migration 5: router_limit_instances, router_limit_counts;
 * docs/DATABASE.md).  All on the watcher's connection `c`; times are the database's clock.
 * `self` is this router's instance id.
 */
#define RT_LIM_ROWS_MAX 200000 /* rows of other routers read at most per round */

struct rt_lim_row;
struct rt_lim_others;

/**
 * Write this router's heartbeat (with `seq`, which moves whenever its counts are written)
 * and `rows` (borrowed; both counts 0: delete the row), in one transaction; with `resync`,
 * every count of this router is deleted first (then `rows` are all of them).
 */
int rt_db_lim_publish(struct mt_db_conn *c, const char *self, int64_t seq,
                      const struct rt_lim_row *rows, size_t n, int resync, struct meshtls_err *err);
/**
 * The other routers whose heartbeat is at most `expire_ms` old: how many (`*live`) and a
 * fingerprint of their ids and seqs (`*fp`): while it stays the same, their counts did not
 * change and need not be read again.
 */
int rt_db_lim_instances(struct mt_db_conn *c, const char *self, int64_t expire_ms, uint64_t *fp,
                        size_t *live, struct meshtls_err *err);
/**
 * The other live routers' counts summed per organisation and user (rt_lim_others_add).
 * @param out a new table the caller owns (rt_limits_set_others takes it).
 */
int rt_db_lim_read(struct mt_db_conn *c, const char *self, int64_t expire_ms,
                   struct rt_lim_others **out, struct meshtls_err *err);
/**
 * `self` not NULL: delete this router's heartbeat and counts (a clean stop: the others stop
 * counting them at once).  `self` NULL: delete the rows of routers silent for longer than
 * `older_than_ms` (dead ones, long after they stopped counting).
 */
int rt_db_lim_forget(struct mt_db_conn *c, const char *self, int64_t older_than_ms,
                     struct meshtls_err *err);

/* ---- the router (router.c, router_run.c) ------------------------------------------------ */

/** 0 = no limit.  Rates are attempts per minute (bursts up to the same number). */
struct rt_limit_opts {
    int user_rate, org_rate;         /* connect-id lines per minute */
    int user_sessions, org_sessions; /* open relays at once */
};

/* Validated configuration; read-only once the router runs. */
struct rt_config {
    const char *listen;
    const char *status;
    struct meshtls_tls_opts tls; /* tls.ca_file: the first CA file */
    const char *const *ca_files; /* every CA file (several for rotation) */
    size_t n_ca_files;
    const char *issuer;
    const char *store_url; /* with its password: never logged (mt_db_url_safe) */
    int workers;
    int job_threads;
    int max_conns;
    int handshake_timeout_ms;
    int line_timeout_ms;  /* the connect-id line must arrive within this */
    int authz_timeout_ms; /* the decision must come within this, else authz-unavailable */
    int connect_timeout_ms;
    int idle_timeout_ms;
    int shutdown_timeout_ms;
    int connlog; /* write router_connections (default on) */
    struct rt_limit_opts limits;
    int cache_ttl_ms; /* answer from the cache without a query this long (0: off) */
    int stale_max_ms; /* with the database failing, answer from the cache this long */
    int recheck_ms;   /* live relays: check the grant again this often (0: never) */
};

/* ---- the connection log (router_log.c): table router_connections ---------------------- */

/** One finished connection (strings borrowed for the call; NULL allowed). */
struct rt_logentry {
    int64_t at_ms; /* Unix milliseconds at accept */
    const char *org, *user, *connect_id, *client, *target, *result, *reason;
    uint64_t bytes_up, bytes_down;
    int64_t duration_ms, decision_us;
};

/** The writer: a bounded queue and one thread (see router_log.c). */
struct rt_connlog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rt_logrec *head, *tail;
    size_t n, max;
    int stop, running;
    pthread_t t;
    struct mt_db *db;
    atomic_ullong written, dropped;
};

/** Start the writer on `db` (borrowed; outlives rt_connlog_stop) with at most `max` queued. */
int rt_connlog_start(struct rt_connlog *l, struct mt_db *db, size_t max, struct meshtls_err *err);
/** Queue `e` (copied); drops and counts it when the queue is full.  Any thread. */
void rt_connlog_push(struct rt_connlog *l, const struct rt_logentry *e);
/** Write what is queued, stop and join the thread. */
void rt_connlog_stop(struct rt_connlog *l);

/* ---- limits (router_limits.c) ---------------------------------------------------------- */

/*
 * Limits across several routers (docs/ROUTER.md, "Limits"): each router counts its own
 * sessions and attempts in memory, as one router alone does, and its watcher thread
 * (router_watch.c) publishes them to router_limit_counts every tick and reads the other
 * routers' sums back into an immutable table (struct rt_lim_others) that it swaps in under
 * the limits' mutex.  The check on the event loop reads memory only: local + others.  As
 * HAProxy's stick-table peers, the sharing is eventually consistent: the others' counts are
 * at most two ticks plus two queries old (their write at their tick, our read at ours), so
 * the routers together may admit beyond a limit by what the other routers admitted in that
 * time, never more.
 */
#define RT_LIM_SLOT_MS 5000  /* attempts are counted in slots this wide ... */
#define RT_LIM_SLOTS 13      /* ... this many: the current one and the 60 s before it */
#define RT_LIM_ROUTER_MAX 95 /* longest router instance id (hostname:pid:random) */

struct rt_lim_others;

struct rt_limits {
    struct rt_limit_opts o;
    pthread_mutex_t mu;
    struct lim_ent **b;
    size_t entries;
    struct rt_lim_others *others; /* the other routers' sums (under mu; NULL: none known) */
    atomic_ullong syncs;          /* publish + read rounds that succeeded (metric) */
    atomic_int peers;             /* other live routers (heartbeat within the expiry; metric) */
};

int rt_limits_init(struct rt_limits *l, const struct rt_limit_opts *o);
/** Free the entries and the others' table (the watcher must be stopped). */
void rt_limits_free(struct rt_limits *l);
/** Whether any limit is on (else nothing is counted, published or read). */
int rt_limits_on(const struct rt_limits *l);
/**
 * Count one attempt for org/user at `now_ms` (monotonic) unless the attempts of the last
 * minute, this router's plus the others', reach the rate.  RT_OK or RT_RATE_LIMITED (a
 * refused attempt is not counted).
 */
enum rt_code rt_limits_attempt(struct rt_limits *l, const char *org, const char *user,
                               int64_t now_ms);
/**
 * Open one session unless this router's plus the others' open sessions reach the limit
 * (RT_OK, RT_TOO_MANY_SESSIONS); rt_limits_release after an RT_OK.
 */
enum rt_code rt_limits_acquire(struct rt_limits *l, const char *org, const char *user);
void rt_limits_release(struct rt_limits *l, const char *org, const char *user);
/** Forget idle entries (nothing open, counted or left published); @return the entries left. */
size_t rt_limits_sweep(struct rt_limits *l, int64_t now_ms);

/**
 * One row of router_limit_counts: a user's counts at one router, or the organisation's
 * (user ""), as published and as read back.
 */
struct rt_lim_row {
    char router[RT_LIM_ROUTER_MAX + 1]; /* the router instance that counted */
    char org[RT_ID_MAX + 1];
    char user[RT_ID_MAX + 1]; /* "" for the organisation's row */
    int64_t active;           /* open sessions */
    int64_t attempts;         /* attempts admitted in the last minute */
    int64_t age_ms;           /* read: time since its router's heartbeat (database clock) */
};

/**
 * The counts that differ from what was last published (with `all`, every count that is not
 * zero: a full resync), as a new array `*out` of `*n` rows (router ""), and mark them as
 * published.  A row with both counts 0 means "delete mine".  Called by the watcher only.
 * @return 0 or MESHTLS_ENOMEM (nothing marked).
 */
int rt_limits_changes(struct rt_limits *l, int64_t now_ms, int all, struct rt_lim_row **out,
                      size_t *n);
/** After a failed publish: the next rt_limits_changes must resync (`all`). */
void rt_limits_unpublish(struct rt_limits *l);

/** A new, empty others' table; NULL when out of memory. */
struct rt_lim_others *rt_lim_others_new(void);
void rt_lim_others_free(struct rt_lim_others *o);
/**
 * Add `row` to the sums unless it is this router's own (router == `self`) or its router's
 * heartbeat is older than `expire_ms` (a router that stopped or died).  Pure.
 * @return 1 added, 0 skipped, MESHTLS_ENOMEM.
 */
int rt_lim_others_add(struct rt_lim_others *o, const struct rt_lim_row *row, const char *self,
                      int64_t expire_ms);
/** The sums for org/user (`user` NULL: the organisation's); zeros when absent. */
void rt_lim_others_get(const struct rt_lim_others *o, const char *org, const char *user,
                       int64_t *active, int64_t *attempts);
/** The distinct routers whose rows were added. */
size_t rt_lim_others_routers(const struct rt_lim_others *o);
/**
 * Put `o` (taken; NULL: local counts only) in service.  @return the table it replaces, for
 * the caller to free outside the lock.
 */
struct rt_lim_others *rt_limits_set_others(struct rt_limits *l, struct rt_lim_others *o);

/**
 * What the watcher does with the others' counts it has, `since_ok_ms` after the last
 * successful read, when this round's read failed: keep them while they are younger than
 * `keep_ms`, then drop them (local counts only).  Pure.  @return 1 keep, 0 drop.
 */
int rt_lim_keep_others(int64_t since_ok_ms, int64_t keep_ms);
/** Fold one live router (`id`, `seq`) into fingerprint `h` (FNV-1a; start: its offset). */
uint64_t rt_lim_fingerprint(uint64_t h, const char *id, int64_t seq);

/* ---- the decision cache (router_cache.c) ------------------------------------------------ */

/** A cached verdict (RT_OK with the resolved address, RT_NOT_FOUND or RT_FORBIDDEN). */
struct rt_cached {
    enum rt_code code;
    char addr[300];
    char via[RT_ID_MAX + 8];
    struct sockaddr_storage sa;
    socklen_t salen;
};

struct rt_cache {
    pthread_mutex_t mu;
    struct rt_cent **b;
    size_t n;
    uint64_t gen; /* clears so far (under mu) */
};

int rt_cache_init(struct rt_cache *c);
void rt_cache_free(struct rt_cache *c);
/** The verdict for org/user/cid if it is at most `max_age_ms` old at `now_ms` (1), else 0. */
int rt_cache_get(struct rt_cache *c, const char *org, const char *user, const char *cid,
                 int64_t now_ms, int64_t max_age_ms, struct rt_cached *out);
/** Forget every verdict (the data changed); moves the generation on. */
void rt_cache_clear(struct rt_cache *c);
/** The generation: read it before a lookup and give it to rt_cache_put. */
uint64_t rt_cache_gen(struct rt_cache *c);
/**
 * Store (or refresh) the verdict, copied, unless the cache was cleared since `gen` was read
 * (a lookup that raced a change must not put its old answer back).
 */
void rt_cache_put(struct rt_cache *c, const char *org, const char *user, const char *cid,
                  int64_t now_ms, uint64_t gen, const struct rt_cached *v);

/* ---- invalidation: what other threads tell live relays (router_watch.c, router_run.c) -- */

/**
 * Shared by the watcher, the main thread and the workers; only atomics are written after
 * the engine starts.  A relay remembers both generations when its grant was decided and,
 * on its next tick (RT_LIVE_TICK_MS), checks again on its own worker when one moved: no
 * thread ever touches another's connections.
 */
struct rt_live {
    atomic_ullong data_gen;       /* the data changed: the cache was flushed */
    atomic_ullong crl_gen;        /* a reload published a new CRL */
    struct mt_snap_holder *snaps; /* the listener's: the current snapshot's CRLs */
};

/** How often a live relay looks at the generations: the "cut within two seconds" bound. */
#define RT_LIVE_TICK_MS 250

/** The router's snapshot: the TLS context and the CRLs it was built with (for live relays). */
struct rt_snap {
    struct mt_snap base;
    STACK_OF(X509_CRL) * crls; /* NULL without --crl */
};

/**
 * Whether `cert` (its issuer and serial) is listed in one of `crls`.  Pure: any thread.
 * @param serial if not NULL, receives the serial in hex (for the audit line).
 */
int rt_crl_revoked(STACK_OF(X509_CRL) * crls, X509 *cert, char *serial, size_t cap);

/* The others' counts a router adds (router_watch.c): the bounds of docs/ROUTER.md "Limits". */
#define RT_LIM_EXPIRE_MS 2000 /* a router silent this long (8 ticks) stops counting */
#define RT_LIM_KEEP_MS 5000   /* the database unreachable: the last sums count this long */

enum rt_lim_state {
    RT_LIM_LOCAL = 0, /* this router's counts alone (before the first round, or after KEEP) */
    RT_LIM_SHARED,    /* the last round succeeded */
    RT_LIM_KEEPING,   /* rounds fail: the last sums are kept until RT_LIM_KEEP_MS */
};

/** The watcher thread (router_watch.c). */
struct rt_watch {
    pthread_t t;
    int started;
    atomic_int stop;
    struct mt_db *db;        /* its own handle: one connection, never one of the job threads' */
    struct mt_db_conn *conn; /* listening since rt_watch_start (the thread's from then on) */
    int64_t seen;            /* the change counter when it started listening */
    struct rt_cache *cache;
    struct rt_live *live;
    atomic_ullong flushes; /* cache flushes for a change (metric) */
    /* limits shared with the other routers (the thread's own from rt_watch_start on) */
    struct rt_limits *limits;              /* NULL or all off: nothing shared */
    char router_id[RT_LIM_ROUTER_MAX + 1]; /* this router's rows: hostname:pid:random */
    int64_t lim_seq;                       /* moves whenever our counts are written */
    int64_t lim_next;                      /* monotonic ms of the next round */
    int64_t lim_ok_ms;                     /* the last round that succeeded */
    uint64_t lim_fp;                       /* the live others when their counts were read */
    uint64_t lim_rounds;                   /* rounds that succeeded (dead rows' clean-up) */
    int lim_read;                          /* lim_fp is valid */
    int lim_resync;                        /* write all our counts, not the changes */
    enum rt_lim_state lim_state;           /* what the log said last */
};

/**
 * Open a one-connection handle on `url` (borrowed), check the triggers, and start the
 * thread: it listens for changes (PostgreSQL: LISTEN RT_DB_CHANNEL; SQLite: data_version,
 * then the change counter), flushes `cache`, moves live->data_gen on, and keeps
 * rt_metrics.db_up; with `limits` on, it shares their counts every tick.  `cache`, `live`
 * and `limits` (NULL: none) are borrowed until rt_watch_stop.
 */
int rt_watch_start(struct rt_watch *w, const char *url, struct rt_cache *cache,
                   struct rt_live *live, struct rt_limits *limits, struct meshtls_err *err);
/** Stop and join the thread, close its handle (a never-started `w` is fine). */
void rt_watch_stop(struct rt_watch *w);

/** The runtime the protocol reads (the listener's argument). */
struct rt_router {
    const struct rt_config *cfg;
    struct mt_db *db;
    struct rt_connlog *log;   /* NULL: no connection log */
    struct rt_limits *limits; /* NULL: none */
    struct rt_cache *cache;   /* NULL: none */
    struct rt_live *live;     /* NULL: live relays are re-checked only every recheck_ms */
};

/*
 * The router's own metrics, on the proxy's registry (px_metrics.reg), set by rt_run before
 * the engine starts; NULL series when there is no registry (tests).
 */
struct rt_metrics {
    struct mt_series *decisions[RT_CODE_N]; /* meshtls_router_decisions_total{code} */
    struct mt_series *decision_time;        /* meshtls_router_decision_duration_seconds */
    struct mt_series *relays;               /* meshtls_router_relays_active */
    struct mt_series *cut_grant;            /* meshtls_router_relays_cut_total{reason="grant"} */
    struct mt_series *cut_revoked;          /* meshtls_router_relays_cut_total{reason="revoked"} */
    atomic_int db_up;                       /* the last database ping answered */
};
extern struct rt_metrics rt_metrics;

/* router_config_keys.c: the `router.*` keys (flags, MESHTLS_ROUTER_* variables, YAML) */
extern const struct meshtls_config_keydef rt_config_keys[];
extern const size_t rt_config_nkeys;
/** Register the `router.*` keys with `cfg` (borrowed), right after meshtls_config_new(). */
int rt_config_register(struct meshtls_config *cfg, struct meshtls_err *err);

/** The router protocol (listener argument: struct rt_router). */
extern const struct mt_proto_ops rt_router_ops;

/**
 * Run the router until SIGTERM/SIGINT.  `cfg` (borrowed) must outlive the call.
 * @return 0 on a clean shutdown, or a MESHTLS_E* code with `err` set.
 */
int rt_run(const struct rt_config *cfg, struct meshtls_err *err);

/**
 * Build the server context: client certificates required and verified against every
 * CA file of cfg->ca_files.  @param out new context the caller frees.
 */
int rt_tls_build(const struct rt_config *cfg, SSL_CTX **out, int64_t *not_after,
                 struct meshtls_err *err);

/**
 * Whether the handshake of `ssl` (on a context from rt_tls_build) let a revoked client
 * certificate through, its revocation being the only failure: the connection must then be
 * refused with RT_REVOKED and never relay.  `ssl` is borrowed.
 */
int rt_tls_leaf_revoked(SSL *ssl);

#endif
