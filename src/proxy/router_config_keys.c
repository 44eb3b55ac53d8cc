/*
 * router_config_keys.c - the `router.*` configuration keys of `meshtls proxy router` and
 * `meshtls router` (docs/ROUTER.md): the same key is a flag, a MESHTLS_ROUTER_<KEY> variable
 * and a key of the YAML file's `router:` section, with precedence flag > environment > file
 * > default.  004's flag names (--server-cert, --server-key, --ca-certs) are aliases of the
 * keys' flags; its --db-* flags are keys of their own (router.db_password is a secret:
 * `meshtls config` shows it as ***, and router.store's password likewise).
 *
 * src/cli/cmd_router.c applies every row; the data commands' rows (ARG: --org, --user, ...)
 * are arguments of one invocation, set by their flag alone.
 */
#include <stddef.h>

#include "meshtls/config.h"
#include "router.h"
#include "router_keys.h"

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define T MESHTLS_CFG_TRUST_DOMAIN
#define D MESHTLS_CFG_DURATION
#define DAY 86400000L
#define SRV RT_KEY_SERVE
#define DATA RT_KEY_DATA
#define ARG MESHTLS_KEY_ARG

/* name, type, default, alias, flag, flag_sets, choices, min, max, help, modes, metavar,
 * group, opts */
const struct meshtls_config_keydef rt_config_keys[] = {
    {"router.listen", S, NULL, NULL, "--listen", NULL, NULL, 0, 0, "address to accept mTLS on", SRV,
     "ADDR", NULL, 0},
    {"router.cert", P, NULL, NULL, "--cert", NULL, NULL, 0, 0, "the router's certificate chain",
     SRV, NULL, NULL, 0},
    {"router.key", P, NULL, NULL, "--key", NULL, NULL, 0, 0, "the router's private key", SRV, NULL,
     NULL, 0},
    {"router.cacert", S, NULL, NULL, "--cacert", NULL, NULL, 0, 0,
     "CA files trusted for user certificates, comma-separated (several: CA rotation)", SRV,
     "FILE,FILE", NULL, MESHTLS_KEY_REPEAT},
    {"router.crl", P, NULL, NULL, "--crl", NULL, NULL, 0, 0, "CRLs: revoked users are refused", SRV,
     NULL, NULL, 0},
    {"router.issuer", T, NULL, NULL, "--issuer", NULL, NULL, 0, 0,
     "trust domain of spiffe://ISSUER/orgs/<org>/users/<user>", SRV, NULL, NULL, 0},
    {"router.store", S, NULL, NULL, "--store", NULL, NULL, 0, 0,
     "sqlite:PATH or postgres://USER@HOST/DB (password: PGPASSWORD or ~/.pgpass)", SRV | DATA,
     "URL", NULL, MESHTLS_KEY_URL},
    {"router.db_host", S, NULL, NULL, "--db-host", NULL, NULL, 0, 0,
     "004's PostgreSQL host (instead of --store)", SRV, "H", NULL, 0},
    {"router.db_port", I, NULL, NULL, "--db-port", NULL, NULL, 1, 65535, "004's PostgreSQL port",
     SRV, "P", NULL, 0},
    {"router.db_user", S, NULL, NULL, "--db-user", NULL, NULL, 0, 0, "004's PostgreSQL user", SRV,
     "U", NULL, 0},
    {"router.db_name", S, NULL, NULL, "--db-name", NULL, NULL, 0, 0, "004's PostgreSQL database",
     SRV, "D", NULL, 0},
    {"router.db_password", S, NULL, NULL, "--db-password", NULL, NULL, 0, 0,
     "004's PostgreSQL password (better: PGPASSWORD or ~/.pgpass); never shown", SRV, "PW", NULL,
     MESHTLS_KEY_SECRET},
    {"router.status", S, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "address of /healthz, /readyz and /metrics", SRV, "ADDR", NULL, 0},
    {"router.workers", I, NULL, NULL, "--workers", NULL, NULL, 1, 256,
     "event-loop threads (default: one per core)", SRV, NULL, NULL, 0},
    {"router.job_threads", I, "4", NULL, "--job-threads", NULL, NULL, 1, 64,
     "database threads and connections", SRV, NULL, NULL, 0},
    {"router.max_conns", I, "10000", NULL, "--max-conns", NULL, NULL, 1, 1000000,
     "connections open at once", SRV, NULL, NULL, 0},
    {"router.handshake_timeout", D, "10s", NULL, "--handshake-timeout", NULL, NULL, 1, DAY,
     "time allowed for the TLS handshake", SRV, NULL, NULL, 0},
    {"router.line_timeout", D, "5s", NULL, "--line-timeout", NULL, NULL, 1, DAY,
     "time allowed for the connect-id line", SRV, NULL, NULL, 0},
    {"router.authz_timeout", D, "3s", NULL, "--authz-timeout", NULL, NULL, 1, DAY,
     "time allowed for the decision (then authz-unavailable)", SRV, NULL, NULL, 0},
    {"router.connect_timeout", D, "5s", NULL, "--connect-timeout", NULL, NULL, 1, DAY,
     "time allowed to connect to the host", SRV, NULL, NULL, 0},
    {"router.idle_timeout", D, "1h", NULL, "--idle-timeout", NULL, NULL, 1, 7 * DAY,
     "close a relay idle this long", SRV, NULL, NULL, 0},
    {"router.cache_ttl", D, "500ms", NULL, "--cache-ttl", NULL, NULL, 0, 3600000,
     "answer repeated decisions from memory this long (0: off)", SRV, NULL, NULL, 0},
    {"router.stale_max", D, "30s", NULL, "--stale-max", NULL, NULL, 0, 3600000,
     "with the database failing, cached decisions answer this long", SRV, NULL, NULL, 0},
    {"router.recheck_interval", D, "1s", NULL, "--recheck-interval", NULL, NULL, 0, 3600000,
     "check live relays' grants this often (0: off)", SRV, NULL, NULL, 0},
    {"router.user_rate", I, "120", NULL, "--user-rate", NULL, NULL, 0, 10000000,
     "connection attempts per minute per user (0: no limit)", SRV, NULL, NULL, 0},
    {"router.org_rate", I, "6000", NULL, "--org-rate", NULL, NULL, 0, 10000000,
     "connection attempts per minute per organisation (0: no limit)", SRV, NULL, NULL, 0},
    {"router.user_sessions", I, "50", NULL, "--user-sessions", NULL, NULL, 0, 10000000,
     "open relays per user (0: no limit)", SRV, NULL, NULL, 0},
    {"router.org_sessions", I, "2000", NULL, "--org-sessions", NULL, NULL, 0, 10000000,
     "open relays per organisation (0: no limit)", SRV, NULL, NULL, 0},
    {"router.connection_log", B, "true", NULL, "--no-connection-log", "false", NULL, 0, 0,
     "write one row per connection to router_connections", SRV, NULL, NULL, 0},
    /* meshtls router: arguments of one data command */
    {"router.org", S, NULL, NULL, "--org", NULL, NULL, 0, 0, "the organisation", DATA, "ORG", NULL,
     ARG},
    {"router.addr", S, NULL, NULL, "--addr", NULL, NULL, 0, 0,
     "hosts add: IP[:PORT], [IPv6]:PORT or NAME[:PORT]", DATA, "ADDR", NULL, ARG},
    {"router.user", S, NULL, NULL, "--user", NULL, NULL, 0, 0, "the user", DATA, "USER", NULL, ARG},
    {"router.team", S, NULL, NULL, "--team", NULL, NULL, 0, 0, "the team", DATA, "TEAM", NULL, ARG},
    {"router.host_user", S, NULL, NULL, "--host-user", NULL, NULL, 0, 0,
     "hosts add: the account on the host", DATA, "U", NULL, ARG},
};

const size_t rt_config_nkeys = sizeof(rt_config_keys) / sizeof(rt_config_keys[0]);

/* 004's names of three flags */
static const struct meshtls_config_flag_alias rt_flag_aliases[] = {
    {"--server-cert", "router.cert"},
    {"--server-key", "router.key"},
    {"--ca-certs", "router.cacert"},
};

int rt_config_register(struct meshtls_config *cfg, struct meshtls_err *err)
{
    int rc = meshtls_config_add_keys(cfg, rt_config_keys, rt_config_nkeys, err);
    return rc ? rc
              : meshtls_config_add_flag_aliases(
                    cfg, rt_flag_aliases, sizeof(rt_flag_aliases) / sizeof(rt_flag_aliases[0]),
                    err);
}
