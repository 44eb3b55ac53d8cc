/*
 * config_keys.c - the tables of keys that meshtls_config_new() registers
 * (data only; the loader is config.c).
 *
 * To add a key: add a row here (or, for a consumer such as the proxy, to its
 * own static table passed to meshtls_config_add_keys()), then a row in
 * docs/CONFIG.md.  The canonical variable MESHTLS_<SECTION>_<KEY> comes from
 * the name; give `alias` only for names other ecosystems already use.
 */
#include <stddef.h>

#include "meshtls/config.h"

/* Shared with config.c (declared there). */
extern const struct meshtls_config_keydef mt_config_core_keys[];
extern const size_t mt_config_core_nkeys;
extern const struct meshtls_config_keydef mt_config_proxy_keys[];
extern const size_t mt_config_proxy_nkeys;

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define E MESHTLS_CFG_ENUM
#define D MESHTLS_CFG_DURATION

/* name, type, default, alias, flag, flag_sets, choices, min, max, help */
const struct meshtls_config_keydef mt_config_core_keys[] = {
    {"server.cert_file", P, NULL, "GRPC_SERVER_CERT_PATH", "--cert", NULL, NULL, 0, 0,
     "our certificate chain (PEM, leaf first)"},
    {"server.key_file", P, NULL, "GRPC_SERVER_KEY_PATH", "--key", NULL, NULL, 0, 0,
     "our private key (PEM, mode 0600 or stricter)"},
    {"server.ca_file", P, NULL, "GRPC_CLIENT_CA_CERT_PATH", "--cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies client certificates"},
    {"server.crl_file", P, NULL, NULL, "--crl", NULL, NULL, 0, 0,
     "CRLs (PEM) checked over the client's whole chain"},
    {"server.require_client_cert", B, "true", "GRPC_REQUIRE_CLIENT_CERT",
     "--insecure-no-client-cert", "false", NULL, 0, 0,
     "require and verify a client certificate (mutual TLS)"},
    {"server.min_tls_version", E, "1.3", NULL, "--tls-min-version", NULL, "1.2|1.3", 0, 0,
     "lowest TLS version accepted (1.2 is an opt-in)"},
    {"server.expiry_warn_days", I, "30", NULL, "--expiry-warn-days", NULL, NULL, 0, 3650,
     "warn when our certificate has fewer days left"},
    {"client.cert_file", P, NULL, "GRPC_CLIENT_CERT_PATH", "--cert", NULL, NULL, 0, 0,
     "our client certificate chain (PEM, leaf first)"},
    {"client.key_file", P, NULL, "GRPC_CLIENT_KEY_PATH", "--key", NULL, NULL, 0, 0,
     "our client private key (PEM, mode 0600 or stricter)"},
    {"client.ca_file", P, NULL, "GRPC_SERVER_CA_CERT_PATH", "--cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies the server"},
    {"client.crl_file", P, NULL, NULL, "--crl", NULL, NULL, 0, 0,
     "CRLs (PEM) checked over the server's whole chain"},
    {"client.server_name", S, NULL, "GRPC_SERVER_DOMAIN", "--server-name", NULL, NULL, 0, 0,
     "DNS name (or IP) the server certificate must carry; also SNI"},
    {"client.verify_spiffe_id", MESHTLS_CFG_SPIFFE_ID, NULL, NULL, "--verify-spiffe-id", NULL, NULL,
     0, 0, "exact SPIFFE ID the server must present"},
    {"client.verify_trust_domain", MESHTLS_CFG_TRUST_DOMAIN, NULL, NULL, "--verify-trust-domain",
     NULL, NULL, 0, 0, "trust domain the server's SPIFFE ID must belong to"},
    {"client.min_tls_version", E, "1.3", NULL, "--tls-min-version", NULL, "1.2|1.3", 0, 0,
     "lowest TLS version offered (1.2 is an opt-in)"},
    {"log.level", E, "info", NULL, "--log-level", NULL, "debug|info|warn|error", 0, 0,
     "drop log lines below this level"},
    {"log.format", E, "text", NULL, "--log-format", NULL, "text|json", 0, 0, "log line format"},
};
const size_t mt_config_core_nkeys = sizeof(mt_config_core_keys) / sizeof(mt_config_core_keys[0]);

/*
 * meshtls proxy (docs/PROXY.md).  Registered by meshtls_config_new() until
 * the proxy registers this table itself with meshtls_config_add_keys().
 */
const struct meshtls_config_keydef mt_config_proxy_keys[] = {
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
const size_t mt_config_proxy_nkeys = sizeof(mt_config_proxy_keys) / sizeof(mt_config_proxy_keys[0]);
