/*
 * config_keys.c - the `proxy.*` configuration keys (docs/PROXY.md, docs/CONFIG.md).
 *
 * This table is the proxy's whole configuration surface: each row is a YAML key under
 * `proxy:`, an environment variable MESHTLS_PROXY_<KEY>, and (when it has one) a flag of
 * `meshtls proxy server|client`, with its type, range, default and help.  The command line
 * parser and --help are generated from it (meshtls_config_parse_args/_print_flags), and
 * px_config_from() (proxy_config.c) applies every row, so a key cannot be shown by
 * `meshtls config` and then ignored by the proxy.
 *
 * The library knows nothing of the proxy: `meshtls proxy` and `meshtls config` register
 * this table with px_config_register() right after meshtls_config_new().
 *
 * To add a key: a row here, the field it sets in px_config_from(), a row in the unit test
 * tests/unit/proxy/test_proxy_config.c (it fails for a row it does not know).
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
#define SRV PX_KEY_SERVER
#define CLI PX_KEY_CLIENT
#define REP MESHTLS_KEY_REPEAT
#define DAY 86400000L

/* name, type, default, alias, flag, flag_sets, choices, min, max, help,
 * modes (0: both), metavar, --help group, opts */
const struct meshtls_config_keydef px_config_keys[] = {
    /* addresses */
    {"proxy.listen", S, NULL, NULL, "--listen", NULL, NULL, 0, 0,
     "address to accept on (host:port, [v6]:port, :port); required", 0, "ADDR", "addresses", 0},
    {"proxy.target", S, NULL, NULL, "--target", NULL, NULL, 0, 0, "address to relay to; required",
     0, "ADDR", "addresses", 0},
    {"proxy.insecure_listen", B, "false", NULL, "--insecure-listen", "true", NULL, 0, 0,
     "allow a plaintext --listen off loopback", CLI, NULL, "addresses", 0},
    {"proxy.insecure_target", B, "false", NULL, "--insecure-target", "true", NULL, 0, 0,
     "allow a plaintext --target off loopback", SRV, NULL, "addresses", 0},
    /* TLS towards the target */
    {"proxy.target_tls", B, "false", NULL, "--target-tls", "true", NULL, 0, 0,
     "re-encrypt to the target with mutual TLS", SRV, NULL, "TLS to the target", 0},
    {"proxy.target_cert_file", P, NULL, NULL, "--target-cert", NULL, NULL, 0, 0,
     "certificate shown to the target (default: --cert)", SRV, NULL, "TLS to the target", 0},
    {"proxy.target_key_file", P, NULL, NULL, "--target-key", NULL, NULL, 0, 0,
     "key of --target-cert (default: --key)", SRV, NULL, "TLS to the target", 0},
    {"proxy.target_ca_file", P, NULL, NULL, "--target-cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies the target (default: --cacert)", SRV, NULL, "TLS to the target", 0},
    {"proxy.target_server_name", S, NULL, NULL, "--target-server-name", NULL, NULL, 0, 0,
     "DNS name (or IP) the target's certificate must carry", SRV, "NAME", "TLS to the target", 0},
    {"proxy.target_verify_spiffe_id", MESHTLS_CFG_SPIFFE_ID, NULL, NULL,
     "--target-verify-spiffe-id", NULL, NULL, 0, 0, "exact SPIFFE ID the target must present", SRV,
     NULL, "TLS to the target", 0},
    /* the caller's identity (server) */
    {"proxy.allow_all", B, "false", NULL, "--allow-all", "true", NULL, 0, 0,
     "allow any client with a certificate the CA bundle verifies", SRV, NULL, "server policy", 0},
    {"proxy.allow_cn", S, NULL, NULL, "--allow-cn", NULL, NULL, 0, 0, "allow subject CN NAME", SRV,
     "NAME", "server policy", REP},
    {"proxy.allow_ou", S, NULL, NULL, "--allow-ou", NULL, NULL, 0, 0, "allow subject OU NAME", SRV,
     "NAME", "server policy", REP},
    {"proxy.allow_dns", S, NULL, NULL, "--allow-dns", NULL, NULL, 0, 0, "allow a DNS SAN NAME", SRV,
     "NAME", "server policy", REP},
    {"proxy.allow_uri", S, NULL, NULL, "--allow-uri", NULL, NULL, 0, 0,
     "allow a SPIFFE ID ('*' matches one path segment, a final '**' one or more) or any other "
     "URI SAN, exactly",
     SRV, "URI", "server policy", REP},
    {"proxy.allow_ip", S, NULL, NULL, "--allow-ip", NULL, NULL, 0, 0,
     "allow an IP SAN inside an address or CIDR (10.0.0.0/8, 2001:db8::/32)", SRV, "CIDR",
     "server policy", REP},
    {"proxy.allow_email", S, NULL, NULL, "--allow-email", NULL, NULL, 0, 0,
     "allow an email SAN, exactly", SRV, "ADDR", "server policy", REP},
    {"proxy.allow_trust_domain", S, NULL, NULL, "--allow-trust-domain", NULL, NULL, 0, 0,
     "allow any SPIFFE ID in trust domain TD", SRV, "TD", "server policy", REP},
    {"proxy.allow", S, NULL, NULL, NULL, NULL, NULL, 0, 0,
     "allow-list \"uri=...,cn=...,dns=...,ou=...,trust-domain=...,ip=...,email=...,allow-all\" "
     "(the --allow-* flags add to it)",
     SRV, NULL, "server policy", 0},
    {"proxy.policy_file", P, NULL, NULL, "--policy", NULL, NULL, 0, 0,
     "policy file (YAML allow-lists per local service; put every service's rules in it)", SRV, NULL,
     "server policy", MESHTLS_KEY_ONCE},
    {"proxy.service", S, NULL, NULL, "--service", NULL, NULL, 0, 0,
     "the local service this proxy fronts: selects its rules in the policy file", SRV, "NAME",
     "server policy", 0},
    {"proxy.forward_identity", E, NULL, NULL, "--forward-identity", NULL, "proxy-v2|http-headers",
     0, 0,
     "pass the client's identity to the target: a PROXY v2 header, or X-Client-Cert-* / "
     "X-Forwarded-Client-Cert on HTTP/1.1 requests",
     SRV, NULL, "server policy", 0},
    /* handshake */
    {"proxy.alpn", S, NULL, NULL, "--alpn", NULL, NULL, 0, 0,
     "ALPN protocols, comma-separated (gRPC needs h2): a client offers them, a server picks the "
     "first it shares",
     0, "LIST", "handshake", 0},
    {"proxy.session_cache_size", I, "20000", NULL, "--session-cache-size", NULL, NULL, 0, 10000000,
     "TLS sessions kept for resumption, shared by workers, kept across reloads (0 = OpenSSL's "
     "stateless tickets)",
     SRV, NULL, "handshake", 0},
    {"proxy.session_lifetime", D, "5m", NULL, "--session-lifetime", NULL, NULL, 1000, DAY,
     "how long a TLS session may be resumed", SRV, NULL, "handshake", 0},
    {"proxy.tickets", I, NULL, NULL, "--tickets", NULL, NULL, 0, 10,
     "session tickets per full handshake (0 = no resumption; default 1 with the cache)", SRV, NULL,
     "handshake", 0},
    {"proxy.verify_cache_size", I, "10000", NULL, "--verify-cache-size", NULL, NULL, 0, 10000000,
     "client chains remembered as verified under the current CA/CRL (0 = verify every chain)", SRV,
     NULL, "handshake", 0},
    {"proxy.verify_depth", I, "4", NULL, "--verify-depth", NULL, NULL, 1, 16,
     "most intermediates between a peer's certificate and a trusted CA", 0, "N", "handshake", 0},
    {"proxy.partial_chain", B, "false", NULL, "--partial-chain", "true", NULL, 0, 0,
     "trust chains ending at any certificate of the CA bundle (opt-in: the root is then not "
     "checked)",
     0, NULL, "handshake", 0},
    {"proxy.verify_profile", E, "rfc5280", NULL, "--verify-profile", NULL, "rfc5280|off", 0, 0,
     "after OpenSSL's verification, refuse peer chains and CRLs that break RFC 5280's profile "
     "(docs/PKI.md lists the rules; off: OpenSSL's checks only)",
     0, NULL, "handshake", 0},
    /* engine */
    {"proxy.workers", I, NULL, NULL, "--workers", NULL, NULL, 1, 256,
     "worker threads (default: one per core)", 0, NULL, "engine", 0},
    {"proxy.max_conns", I, "10000", NULL, "--max-conns", NULL, NULL, 1, 1000000,
     "connections open at once", 0, NULL, "engine", 0},
    {"proxy.handshake_timeout", D, "10s", NULL, "--handshake-timeout", NULL, NULL, 1, DAY,
     "time allowed for the TLS handshake (D: 500ms, 10s, 5m, 1h)", 0, NULL, "engine", 0},
    {"proxy.connect_timeout", D, "5s", NULL, "--connect-timeout", NULL, NULL, 1, DAY,
     "time allowed to connect to the target", 0, NULL, "engine", 0},
    {"proxy.idle_timeout", D, "5m", NULL, "--idle-timeout", NULL, NULL, 1, DAY,
     "close a connection idle this long", 0, NULL, "engine", 0},
    {"proxy.shutdown_timeout", D, "30s", NULL, "--shutdown-timeout", NULL, NULL, 1, DAY,
     "drain time after SIGTERM", 0, NULL, "engine", 0},
    /* reload */
    {"proxy.reload_interval", D, NULL, NULL, "--reload-interval", NULL, NULL, 1000, 7 * DAY,
     "also rebuild the TLS context and policy this often (SIGHUP always does)", 0, NULL, "reload",
     0},
    {"proxy.watch_files", B, "true", NULL, "--no-watch", "false", NULL, 0, 0,
     "reload when a TLS or policy file changes (--no-watch turns it off)", 0, NULL, "reload", 0},
    /* observability */
    {"proxy.status", S, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "serve /healthz, /readyz and /metrics on ADDR (e.g. 127.0.0.1:9100)", 0, "ADDR",
     "observability", 0},
};
const size_t px_config_nkeys = sizeof(px_config_keys) / sizeof(px_config_keys[0]);

int px_config_register(struct meshtls_config *cfg, struct meshtls_err *err)
{
    return meshtls_config_add_keys(cfg, px_config_keys, px_config_nkeys, err);
}
