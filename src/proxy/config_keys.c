/*
 * config_keys.c - the `proxy.*` configuration keys (docs/PROXY.md, docs/CONFIG.md).
 *
 * The library knows nothing of the proxy: `meshtls proxy` and `meshtls config`
 * register this table with px_config_register() right after meshtls_config_new().
 * The canonical variable MESHTLS_PROXY_<KEY> comes from the name.
 */
#include <stddef.h>

#include "meshtls/config.h"
#include "proxy.h"

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define E MESHTLS_CFG_ENUM
#define D MESHTLS_CFG_DURATION

/* name, type, default, alias, flag, flag_sets, choices, min, max, help */
const struct meshtls_config_keydef px_config_keys[] = {
    {"proxy.listen", S, NULL, NULL, "--listen", NULL, NULL, 0, 0, "address to accept on"},
    {"proxy.target", S, NULL, NULL, "--target", NULL, NULL, 0, 0, "address to relay to"},
    {"proxy.status", S, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "address of /healthz, /readyz and /metrics"},
    {"proxy.workers", I, NULL, NULL, "--workers", NULL, NULL, 1, 256,
     "worker threads (default: one per core)"},
    {"proxy.max_conns", I, "10000", NULL, "--max-conns", NULL, NULL, 1, 1000000,
     "connections open at once"},
    {"proxy.handshake_timeout", D, "10s", NULL, "--handshake-timeout", NULL, NULL, 1, 86400000,
     "time allowed for the TLS handshake"},
    {"proxy.connect_timeout", D, "5s", NULL, "--connect-timeout", NULL, NULL, 1, 86400000,
     "time allowed to connect to the target"},
    {"proxy.idle_timeout", D, "5m", NULL, "--idle-timeout", NULL, NULL, 1, 86400000,
     "close a connection idle this long"},
    {"proxy.shutdown_timeout", D, "30s", NULL, "--shutdown-timeout", NULL, NULL, 1, 86400000,
     "drain time on SIGTERM"},
    {"proxy.reload_interval", D, NULL, NULL, "--reload-interval", NULL, NULL, 1000, 7 * 86400000L,
     "rebuild the TLS context this often (at most 7 days)"},
    {"proxy.policy_file", P, NULL, NULL, "--policy", NULL, NULL, 0, 0,
     "YAML policy file of allowed callers"},
    {"proxy.service", S, NULL, NULL, "--service", NULL, NULL, 0, 0,
     "local service name in the policy file"},
    {"proxy.allow", S, NULL, NULL, NULL, NULL, NULL, 0, 0,
     "allow-list \"uri=...,cn=...,dns=...,ou=...,trust-domain=...,allow-all\" "
     "(flags --allow-* add to it)"},
    {"proxy.forward_identity", E, NULL, NULL, "--forward-identity", NULL, "proxy-v2|http-headers",
     0, 0, "pass the client's identity to the target"},
    {"proxy.alpn", S, NULL, NULL, "--alpn", NULL, NULL, 0, 0, "ALPN protocols, comma-separated"},
    {"proxy.session_cache_size", I, "20000", NULL, "--session-cache-size", NULL, NULL, 0, 10000000,
     "TLS sessions kept for resumption (0 = off)"},
    {"proxy.session_lifetime", D, "5m", NULL, "--session-lifetime", NULL, NULL, 1000, 86400000,
     "how long a TLS session may be resumed"},
    {"proxy.tickets", I, NULL, NULL, "--tickets", NULL, NULL, 0, 10,
     "session tickets per full handshake (0 = no resumption; default 1 with the cache)"},
    {"proxy.verify_cache_size", I, "10000", NULL, "--verify-cache-size", NULL, NULL, 0, 10000000,
     "client chains remembered as verified (0 = verify every chain)"},
    {"proxy.partial_chain", B, "false", NULL, "--partial-chain", NULL, NULL, 0, 0,
     "trust chains ending at any certificate of the CA bundle (opt-in)"},
};
const size_t px_config_nkeys = sizeof(px_config_keys) / sizeof(px_config_keys[0]);

int px_config_register(struct meshtls_config *cfg, struct meshtls_err *err)
{
    return meshtls_config_add_keys(cfg, px_config_keys, px_config_nkeys, err);
}
