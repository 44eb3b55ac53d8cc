/*
 * proxy.h - the data plane: `meshtls proxy server|client`.
 *
 * The proxy is one protocol (relay.c) on the shared engine (src/net/net.h):
 * the engine's workers accept, run the TLS handshake and call the relay's
 * hooks; the main thread (proxy.c) handles signals, reloads and the file
 * watch; a status thread serves /healthz, /readyz and /metrics.
 *
 * Data flows one way: the configuration is validated into a struct
 * px_config; everything a connection reads is built from it into one
 * struct px_snap and published in the listener's snapshot holder; each
 * connection holds the snapshot it started with, so a reload swaps one
 * pointer and never touches open connections.
 */
#ifndef MESHTLS_PROXY_H
#define MESHTLS_PROXY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "meshtls/config.h"
#include "meshtls/policy.h"
#include "meshtls/tls.h"
#include "http_net.h"
#include "metrics.h"
#include "net.h"

enum px_mode {
    PX_MODE_SERVER = 1, /* mTLS in, plaintext (or --target-tls) out */
    PX_MODE_CLIENT,     /* plaintext in, mTLS out */
};

/* Validated configuration; read-only once the proxy runs. */
struct px_config {
    enum px_mode mode;
    const char *listen;            /* "host:port" */
    const char *target;            /* "host:port" */
    struct meshtls_tls_opts tls;   /* our side's TLS (server: accept; client: dial) */
    struct meshtls_policy *policy; /* server: rules from flags and proxy.allow (owned); each
                                    * TLS context gets these plus the policy file's, re-read
                                    * on every reload (px_policy_build) */
    const char *policy_file;       /* server: YAML policy file, or NULL */
    const char *service;           /* local service name for service-scoped rules */
    const char *status;            /* status listener "host:port" or NULL */
    int workers;                   /* worker threads */
    int max_conns;                 /* simultaneous client connections */
    int handshake_timeout_ms;
    int connect_timeout_ms;
    int idle_timeout_ms;
    int shutdown_timeout_ms;
    int reload_interval_s; /* 0 = off */
    int watch_files;       /* reload when a TLS file changes */
    int forward_pp2;       /* server: send a PROXY v2 header with the identity */
    int forward_http;      /* server: set X-Client-Cert-* / XFCC on HTTP/1.1 requests */
    const char *alpn;      /* "h2,http/1.1": client offers, server selects; NULL = none */
    int target_tls;        /* server: re-encrypt to the target with mTLS */
    int insecure_listen;   /* client: allow a plaintext listener off loopback */
    int insecure_target;   /* server: allow a plaintext target off loopback */
    struct meshtls_tls_opts target_opts; /* server: TLS towards the target (--target-*) */
    /* added by the configuration rework (issue 12 s.5); px_config_from fills them, the
     * command creates the caches from them */
    size_t session_cache_size; /* server: sessions kept for resumption; 0 = none */
    int session_lifetime_s;    /* server: how long a session may be resumed */
    size_t verify_cache_size;  /* server: verified chains remembered; 0 = none */
    /* How a reload re-reads the whole configuration (flags, environment, --config file), or
     * NULL to rebuild from this one (programs that fill a px_config by hand). */
    const struct px_reread *reread;
};

/*
 * A reload re-reads the configuration as the start did, so a changed target, ALPN list,
 * forwarding mode, timeout, allow rule or file path in the YAML file or the environment
 * takes effect for new connections (what nginx -s reload and HAProxy's reload do).  The
 * command that parsed the configuration supplies this: px_run() calls load() on SIGHUP, on a
 * change of a watched file (the --config file included) and on the reload timer.
 */
struct px_reread {
    /* Parse again into a new configuration, or fail with a message that names the file or
     * key.  On success *out is new and owned by the caller, freed with release(). */
    int (*load)(void *arg, struct px_config **out, struct meshtls_err *err);
    /* Free a configuration load() returned.  NULL is fine. */
    void (*release)(void *arg, struct px_config *c);
    void *arg;               /* borrowed by px_run until it returns */
    const char *config_file; /* the --config file (watched as well), or NULL */
};

/* Mode bits of the `modes` field of px_config_keys rows: which mode takes the key. */
#define PX_KEY_SERVER (1u << 0)
#define PX_KEY_CLIENT (1u << 1)
/** The key mode bit of `mode`. */
#define PX_KEY_MODE(mode) ((mode) == PX_MODE_SERVER ? PX_KEY_SERVER : PX_KEY_CLIENT)

/*
 * Everything a new connection reads, built whole from the configuration by
 * px_snap_build() and published in the listener's holder (src/net/net.h): a reload
 * builds a new one and swaps one pointer; open connections keep the one they
 * started with.  Immutable once published.
 */
struct px_snap {
    struct mt_snap base; /* base.ctx: server: the accepting context; client: the dialing one */
    SSL_CTX *target_ctx; /* server --target-tls: the context towards the target, or NULL */
    struct meshtls_policy *policy;  /* server: the policy file's rules, then the flags' */
    struct sockaddr_storage target; /* resolved when the snapshot was built */
    socklen_t target_len;
    char target_name[256];
    enum px_mode mode;
    int forward_pp2, forward_http;
    int handshake_timeout_ms, connect_timeout_ms, idle_timeout_ms;
    char *cert_file;          /* our certificate's file (owned: a reload frees configurations) */
    char self_desc[300];      /* our certificate, for /readyz: "spiffe://… (serial …)" */
    int64_t crl_next_update;  /* the soonest nextUpdate of the CRLs we check with (0: none) */
    int crl_count, crl_stale; /* CRLs loaded, and those past their nextUpdate */
    char *service;            /* --service of the configuration it was built from (owned) */
    int tls_min_12;           /* TLS 1.2 is accepted (classifies a version refusal) */
    struct px_crl *crls;      /* each CRL with a nextUpdate, n_crls of them (owned) */
    size_t n_crls;
};

/* One CRL the snapshot checks with, for meshtls_crl_next_update_seconds{issuer}. */
struct px_crl {
    char issuer[256]; /* RFC 2253, as the refused lines print issuers */
    int64_t next_update;
};

/* Metric counters (Prometheus names in metrics.c). */
enum px_hs_error {
    PX_HSE_NO_CERT = 0,
    PX_HSE_UNTRUSTED,
    PX_HSE_EXPIRED,
    PX_HSE_REVOKED,
    PX_HSE_BAD_NAME,
    PX_HSE_PROTOCOL,
    PX_HSE_TIMEOUT,
    PX_HSE_OTHER,
    PX_HSE_PLAINTEXT, /* not TLS at all: an HTTP request, random bytes */
    PX_HSE_VERSION,   /* a TLS version below the minimum */
    PX_HSE_TOO_LARGE, /* a certificate message over OpenSSL's limit */
    PX_HSE_PROFILE,   /* a verified chain that breaks RFC 5280's profile (x509_profile.c) */
    PX_HSE_N
};

/* Counters without labels of their own (names in metrics.c). */
enum px_counter {
    PX_C_HS_OK = 0,
    PX_C_HS_FAIL,
    PX_C_ALLOW,
    PX_C_DENY,
    PX_C_BYTES_UP, /* towards the target */
    PX_C_BYTES_DOWN,
    PX_C_RELOAD_OK,
    PX_C_RELOAD_FAIL,
    PX_C_BACKEND_ERR,
    PX_C_N
};

/*
 * The proxy's metrics on the labelled registry (src/lib/metrics.h): one shard per worker
 * (mt_conn_shard) plus one for the main and status threads (main_shard), summed at scrape
 * time.  The series pointers are set by px_metrics_init and read without locks.
 */
struct px_metrics {
    struct mt_metrics *reg;
    struct mt_series *c[PX_C_N];
    struct mt_series *hs_err[PX_HSE_N];
    struct mt_series *cert_fail[PX_HSE_N]; /* NULL for reasons that are not the certificate's */
    struct mt_series *hs_dur;              /* successful handshake time, seconds */
    unsigned main_shard;
    atomic_int listening;
    atomic_int target_up; /* the last periodic connect to the target worked (readiness) */
    /* set while the proxy runs: the listener's counters (connections, accept pauses) and
     * the snapshot holder (our certificate's expiry) */
    struct mt_listener_stats *lstats;
    struct mt_snap_holder *snap;
};

extern struct px_metrics px_metrics;
/* Caches whose counters /metrics reports (set by the command; may be NULL). */
extern struct meshtls_verify_cache *px_metrics_vcache;
extern struct meshtls_session_cache *px_metrics_scache;

/* metrics.c */
/** Register the proxy's metrics for `workers` worker shards.  Before the engine starts. */
int px_metrics_init(unsigned workers, struct meshtls_err *err);
/** Also export the CRL gauges (meshtls_crl_next_update_seconds, meshtls_crl_stale). */
int px_metrics_add_crl(struct meshtls_err *err);
/** Free the registry, once no thread updates or scrapes it.  Idempotent. */
void px_metrics_fini(void);
/** Add `n` to counter `k` on `shard` (a worker's, or px_metrics.main_shard). */
static inline void px_count(enum px_counter k, unsigned shard, uint64_t n)
{
    if (px_metrics.reg)
        mt_counter_add(px_metrics.c[k], shard, n);
}
/** A failed handshake of kind `k`: the failure, its reason, the certificate's if it is one. */
void px_count_hs_error(enum px_hs_error k, unsigned shard);
/** A successful handshake that took `seconds`. */
void px_metrics_handshake(double seconds, unsigned shard);
/**
 * Classify a failed handshake on `ssl` by what happened: the verification result, else
 * the reason of the last OpenSSL error (peek: the queue is left as it is).
 */
enum px_hs_error px_metrics_classify_ssl(SSL *ssl);
/**
 * A failed handshake on `t` of `c` (not a timeout): classify and count it, say why in
 * words into `msg` ("TLS handshake with client failed: certificate revoked"), name the
 * certificate presented (kept by the library even though it failed) in *who and *serial
 * (strdup'd when still NULL; the caller frees them) and log one `refused` event.  Shared by
 * the relay and the router.  Call before anything drains OpenSSL's error queue.
 */
void px_handshake_failed(struct mt_conn *c, struct mt_end *t, int min_tls12, char **who,
                         char **serial, char *msg, size_t cap);
/** The metric label of `k` ("no_client_cert", "plaintext", ...). */
const char *px_hse_name(enum px_hs_error k);
/**
 * Render the Prometheus text exposition.
 * @param out new buffer the caller frees (free), `*len` bytes; only on success.
 */
int px_metrics_render(char **out, size_t *len, struct meshtls_err *err);

/* proxy.c */
/**
 * Run the proxy until SIGTERM/SIGINT: builds the first snapshot (TLS contexts, policy,
 * target), binds cfg->listen (and cfg->status), starts the engine, handles reloads.
 * `cfg` (borrowed) must outlive the call.
 * @return 0 on a clean shutdown, or a MESHTLS_E* code with `err` set.
 */
int px_run(const struct px_config *cfg, struct meshtls_err *err);
/**
 * Build everything a new connection reads from `cfg` (re-reading every file).
 * Blocking (files, name resolution): never on an event loop.
 * @param out new snapshot with one reference (mt_snap_release frees it); only on success.
 */
int px_snap_build(const struct px_config *cfg, struct px_snap **out, struct meshtls_err *err);

/** Build a context from cfg->tls for cfg->mode. */
int px_tls_build(const struct px_config *cfg, SSL_CTX **out, int64_t *not_after,
                 struct meshtls_err *err);
/**
 * Build the server's whole policy: the rules of cfg->policy_file (read now) followed by
 * cfg->policy's.  A cfg->service that the file does not name is an error.
 * @param out new policy, the caller frees it (meshtls_policy_free); written only on success.
 */
int px_policy_build(const struct px_config *cfg, struct meshtls_policy **out,
                    struct meshtls_err *err);
/** Build the client context towards the target (--target-tls). */
int px_target_tls_build(const struct px_config *cfg, SSL_CTX **out, struct meshtls_err *err);

/* relay.c */
/** The relay protocol of `proxy server|client` (listener argument: the px_config). */
extern const struct mt_proto_ops px_relay_ops;

/* config_keys.c */
/** The `proxy.*` keys (static data). */
extern const struct meshtls_config_keydef px_config_keys[];
extern const size_t px_config_nkeys;
/**
 * Register the `proxy.*` keys with `cfg` (borrowed; the table is static, nothing to free).
 * Call once, right after meshtls_config_new(), before loading a file or the environment.
 * @return 0, or as meshtls_config_add_keys() (e.g. MESHTLS_EEXIST if registered twice).
 */
int px_config_register(struct meshtls_config *cfg, struct meshtls_err *err);

/* proxy_config.c */
/**
 * Fill `out` for `mode` from the effective configuration `cfg` (flags > environment > file
 * > default; every key of px_config_keys and the role's server.* or client.* keys, log.*
 * excepted: see meshtls_config_apply_log), all but the allow rules (px_config_rules).
 * Strings in `out` are borrowed from `cfg`: keep `cfg` alive while `out` is used.
 * Required keys (listen, target, certificates, a policy) are not checked here: see
 * px_config_check_required().
 * @return 0, or MESHTLS_EINVAL naming the key and the source of the value.
 */
int px_config_from(const struct meshtls_config *cfg, enum px_mode mode, struct px_config *out,
                   struct meshtls_err *err);
/**
 * Server: add the global allow rules (proxy.allow_all, proxy.allow_cn/_ou/_dns/_uri/
 * _trust_domain, proxy.allow) to c->policy, creating it; free it with px_config_release().
 * Client: nothing.  On error the rules before the bad one stay in c->policy.
 * @return 0, or MESHTLS_EINVAL naming the flag, variable or FILE:LINE and the rule.
 */
int px_config_rules(const struct meshtls_config *cfg, struct px_config *c, struct meshtls_err *err);
/** Free what px_config_rules() allocated in `c` (the policy).  NULL is fine. */
void px_config_release(struct px_config *c);
/**
 * What the proxy refuses before it builds anything: --listen or --target missing, a
 * server with no access policy (no rule and no policy file), --target-tls in client mode.
 * @return 0 or MESHTLS_EINVAL with the message the command prints.
 */
int px_config_check_required(const struct px_config *c, struct meshtls_err *err);

/** One class of configuration error found by px_config_check(). */
enum px_check_class {
    PX_CHECK_REQUIRED = 0, /* a required key is missing */
    PX_CHECK_ADDRESS,      /* --listen, --target or --status does not parse or resolve */
    PX_CHECK_PLAINTEXT,    /* a plaintext hop off loopback without --insecure-* */
    PX_CHECK_POLICY,       /* the policy file, --service, the allow rules */
    PX_CHECK_TLS,          /* our certificate, key, CA bundle, CRL, ALPN */
    PX_CHECK_TARGET_TLS,   /* --target-tls files and identity */
    PX_CHECK_N
};

/** "required", "address", ...: the name of class `cl` in --check output (static). */
const char *px_check_class_name(enum px_check_class cl);

/** The result of px_config_check(): the first error of each class, "" when none. */
struct px_check_report {
    int nerrors;
    char msg[PX_CHECK_N][MESHTLS_ERR_MSG_MAX];
};

/**
 * Build everything the proxy would build at start, and bind nothing (`--check`): resolve
 * the addresses, apply the loopback rule of plaintext hops, build the policy (policy file,
 * --service, allow rules) and the TLS contexts (files load, key matches certificate, CA,
 * CRL), then free them.  `c` as filled by px_config_from() (the caches may be absent).
 * `rep` starts zeroed by the caller; an error already in it (a rule px_config_rules
 * refused, as PX_CHECK_POLICY) is kept and counted.
 * @return the number of classes with an error (0: the configuration is fine); `rep` holds
 *         their messages.
 */
int px_config_check(const struct px_config *c, struct px_check_report *rep);

/* status.c */
/* The status listener's routes (/healthz, /readyz, /metrics) and HTTP settings. */
struct px_status {
    struct mt_http_router *router;
    struct mt_http_listener http; /* the listener's argument */
};
/** Build the routes; the caller frees with px_status_free after the engine is freed. */
int px_status_setup(struct px_status *st, struct meshtls_err *err);
void px_status_free(struct px_status *st);

#endif
