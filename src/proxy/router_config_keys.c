/*
 * router_config_keys.c - the `router.*` configuration keys of `meshtls proxy router`
 * (docs/ROUTER.md): the same key is a flag, a MESHTLS_ROUTER_<KEY> variable and a key of
 * the YAML file's `router:` section, with precedence flag > environment > file > default.
 */
#include <stddef.h>

#include "meshtls/config.h"
#include "router.h"

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define T MESHTLS_CFG_TRUST_DOMAIN
#define D MESHTLS_CFG_DURATION
#define DAY 86400000L

/* name, type, default, alias, flag, flag_sets, choices, min, max, help, modes, metavar,
 * group, opts */
const struct meshtls_config_keydef rt_config_keys[] = {
    {"router.listen", S, NULL, NULL, "--listen", NULL, NULL, 0, 0, "address to accept mTLS on", 0,
     NULL, NULL, 0},
    {"router.cert", P, NULL, NULL, "--cert", NULL, NULL, 0, 0, "the router's certificate chain", 0,
     NULL, NULL, 0},
    {"router.key", P, NULL, NULL, "--key", NULL, NULL, 0, 0, "the router's private key", 0, NULL,
     NULL, 0},
    {"router.cacert", S, NULL, NULL, "--cacert", NULL, NULL, 0, 0,
     "CA files trusted for user certificates, comma-separated (CA rotation)", 0, NULL, NULL, 0},
    {"router.crl", P, NULL, NULL, "--crl", NULL, NULL, 0, 0, "CRLs: revoked users are refused", 0,
     NULL, NULL, 0},
    {"router.issuer", T, NULL, NULL, "--issuer", NULL, NULL, 0, 0,
     "trust domain of spiffe://ISSUER/orgs/<org>/users/<user>", 0, NULL, NULL, 0},
    {"router.store", S, NULL, NULL, "--store", NULL, NULL, 0, 0,
     "sqlite:PATH or postgres://USER@HOST/DB (password: PGPASSWORD or ~/.pgpass)", 0, NULL, NULL,
     0},
    {"router.status", S, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "address of /healthz, /readyz and /metrics", 0, NULL, NULL, 0},
    {"router.workers", I, NULL, NULL, "--workers", NULL, NULL, 1, 256,
     "event-loop threads (default: one per core)", 0, NULL, NULL, 0},
    {"router.job_threads", I, "4", NULL, "--job-threads", NULL, NULL, 1, 64,
     "database threads and connections", 0, NULL, NULL, 0},
    {"router.max_conns", I, "10000", NULL, "--max-conns", NULL, NULL, 1, 1000000,
     "connections open at once", 0, NULL, NULL, 0},
    {"router.handshake_timeout", D, "10s", NULL, "--handshake-timeout", NULL, NULL, 1, DAY,
     "time allowed for the TLS handshake", 0, NULL, NULL, 0},
    {"router.line_timeout", D, "5s", NULL, "--line-timeout", NULL, NULL, 1, DAY,
     "time allowed for the connect-id line", 0, NULL, NULL, 0},
    {"router.authz_timeout", D, "3s", NULL, "--authz-timeout", NULL, NULL, 1, DAY,
     "time allowed for the decision (then authz-unavailable)", 0, NULL, NULL, 0},
    {"router.connect_timeout", D, "5s", NULL, "--connect-timeout", NULL, NULL, 1, DAY,
     "time allowed to connect to the host", 0, NULL, NULL, 0},
    {"router.idle_timeout", D, "1h", NULL, "--idle-timeout", NULL, NULL, 1, 7 * DAY,
     "close a relay idle this long", 0, NULL, NULL, 0},
    {"router.cache_ttl", D, "500ms", NULL, "--cache-ttl", NULL, NULL, 0, 3600000,
     "answer repeated decisions from memory this long (0: off)", 0, NULL, NULL, 0},
    {"router.stale_max", D, "30s", NULL, "--stale-max", NULL, NULL, 0, 3600000,
     "with the database failing, cached decisions answer this long", 0, NULL, NULL, 0},
    {"router.recheck_interval", D, "1s", NULL, "--recheck-interval", NULL, NULL, 0, 3600000,
     "check live relays' grants this often (0: off)", 0, NULL, NULL, 0},
    {"router.user_rate", I, "120", NULL, "--user-rate", NULL, NULL, 0, 10000000,
     "connection attempts per minute per user (0: no limit)", 0, NULL, NULL, 0},
    {"router.org_rate", I, "6000", NULL, "--org-rate", NULL, NULL, 0, 10000000,
     "connection attempts per minute per organisation (0: no limit)", 0, NULL, NULL, 0},
    {"router.user_sessions", I, "50", NULL, "--user-sessions", NULL, NULL, 0, 10000000,
     "open relays per user (0: no limit)", 0, NULL, NULL, 0},
    {"router.org_sessions", I, "2000", NULL, "--org-sessions", NULL, NULL, 0, 10000000,
     "open relays per organisation (0: no limit)", 0, NULL, NULL, 0},
    {"router.connection_log", B, "true", NULL, "--no-connection-log", "false", NULL, 0, 0,
     "write one row per connection to router_connections", 0, NULL, NULL, 0},
};

const size_t rt_config_nkeys = sizeof(rt_config_keys) / sizeof(rt_config_keys[0]);

int rt_config_register(struct meshtls_config *cfg, struct meshtls_err *err)
{
    return meshtls_config_add_keys(cfg, rt_config_keys, rt_config_nkeys, err);
}
