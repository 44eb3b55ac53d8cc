/*
 * config_keys.c - the table of keys that meshtls_config_new() registers
 * (data only; the loader is config.c).  Consumers add their own tables with
 * meshtls_config_add_keys(): the proxy's is src/proxy/config_keys.c.
 *
 * To add a key: add a row here (or to the consumer's table), then a row in
 * docs/CONFIG.md.  The canonical variable MESHTLS_<SECTION>_<KEY> comes from
 * the name; give `alias` only for names other ecosystems already use.
 */
#include <stddef.h>

#include "meshtls/config.h"

/* Shared with config.c (declared there). */
extern const struct meshtls_config_keydef mt_config_core_keys[];
extern const size_t mt_config_core_nkeys;

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define E MESHTLS_CFG_ENUM
#define D MESHTLS_CFG_DURATION

/* name, type, default, alias, flag, flag_sets, choices, min, max, help,
 * modes (0: every mode; server.* / client.* follow the role), metavar, --help group, opts */
const struct meshtls_config_keydef mt_config_core_keys[] = {
    {"server.cert_file", P, NULL, "GRPC_SERVER_CERT_PATH", "--cert", NULL, NULL, 0, 0,
     "our certificate chain (PEM, leaf first)", 0, NULL, "TLS", 0},
    {"server.key_file", P, NULL, "GRPC_SERVER_KEY_PATH", "--key", NULL, NULL, 0, 0,
     "our private key (PEM, mode 0600 or stricter)", 0, NULL, "TLS", 0},
    {"server.ca_file", P, NULL, "GRPC_CLIENT_CA_CERT_PATH", "--cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies client certificates", 0, NULL, "TLS", 0},
    {"server.crl_file", P, NULL, NULL, "--crl", NULL, NULL, 0, 0,
     "CRLs (PEM) checked over the client's whole chain", 0, NULL, "TLS", 0},
    {"server.require_client_cert", B, "true", "GRPC_REQUIRE_CLIENT_CERT",
     "--insecure-no-client-cert", "false", NULL, 0, 0,
     "require and verify a client certificate (mutual TLS)", MESHTLS_MODE_LIBRARY, NULL, "TLS", 0},
    {"server.min_tls_version", E, "1.3", NULL, "--tls-min-version", NULL, "1.2|1.3", 0, 0,
     "lowest TLS version accepted (1.2 is an opt-in)", 0, NULL, "TLS", 0},
    {"server.expiry_warn_days", I, "30", NULL, "--expiry-warn-days", NULL, NULL, 0, 3650,
     "warn when our certificate has fewer days left", 0, NULL, "TLS", 0},
    {"client.cert_file", P, NULL, "GRPC_CLIENT_CERT_PATH", "--cert", NULL, NULL, 0, 0,
     "our client certificate chain (PEM, leaf first)", 0, NULL, "TLS", 0},
    {"client.key_file", P, NULL, "GRPC_CLIENT_KEY_PATH", "--key", NULL, NULL, 0, 0,
     "our client private key (PEM, mode 0600 or stricter)", 0, NULL, "TLS", 0},
    {"client.ca_file", P, NULL, "GRPC_SERVER_CA_CERT_PATH", "--cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies the server", 0, NULL, "TLS", 0},
    {"client.crl_file", P, NULL, NULL, "--crl", NULL, NULL, 0, 0,
     "CRLs (PEM) checked over the server's whole chain", 0, NULL, "TLS", 0},
    {"client.server_name", S, NULL, "GRPC_SERVER_DOMAIN", "--server-name", NULL, NULL, 0, 0,
     "DNS name (or IP) the server certificate must carry; also SNI", 0, "NAME", "TLS", 0},
    {"client.verify_spiffe_id", MESHTLS_CFG_SPIFFE_ID, NULL, NULL, "--verify-spiffe-id", NULL, NULL,
     0, 0, "exact SPIFFE ID the server must present", 0, NULL, "TLS", 0},
    {"client.verify_trust_domain", MESHTLS_CFG_TRUST_DOMAIN, NULL, NULL, "--verify-trust-domain",
     NULL, NULL, 0, 0, "trust domain the server's SPIFFE ID must belong to", 0, NULL, "TLS", 0},
    {"client.min_tls_version", E, "1.3", NULL, "--tls-min-version", NULL, "1.2|1.3", 0, 0,
     "lowest TLS version offered (1.2 is an opt-in)", 0, NULL, "TLS", 0},
    {"log.level", E, "info", NULL, "--log-level", NULL, "debug|info|warn|error", 0, 0,
     "drop log lines below this level", 0, NULL, "observability", 0},
    {"log.format", E, "text", NULL, "--log-format", NULL, "text|json", 0, 0, "log line format", 0,
     NULL, "observability", 0},
};
const size_t mt_config_core_nkeys = sizeof(mt_config_core_keys) / sizeof(mt_config_core_keys[0]);
