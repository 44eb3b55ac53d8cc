/*
 * config.c - configuration from flags, environment and YAML (see
 * meshtls/config.h).
 *
 * One static table describes every key: type, default, environment names,
 * flag.  Each key keeps one value per source; the effective value is the one
 * of the highest source.  The YAML file is read with libyaml's event parser
 * over a fixed shape (section -> key -> scalar), so nesting is bounded by
 * construction.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meshtls/config.h"
#include "meshtls/spiffe.h"
#include "meshtls/x509.h"
#include "yamlev.h"

extern char **environ;

#define CONFIG_FILE_MAX (1024 * 1024)
#define VALUE_MAX 4096

enum ktype { K_PATH = 1, K_STR, K_BOOL, K_INT, K_ENUM, K_SPIFFE, K_TD };

struct key {
    const char *name;
    enum ktype type;
    const char *def;     /* default, or NULL */
    const char *env;     /* canonical MESHTLS_* name */
    const char *alias;   /* GRPC_* alias, or NULL */
    const char *flag;    /* command-line flag, or NULL */
    const char *choices; /* K_ENUM: "a|b|c"; K_INT: "min|max" */
};

static const struct key KEYS[] = {
    {"server.cert_file", K_PATH, NULL, "MESHTLS_SERVER_CERT_FILE", "GRPC_SERVER_CERT_PATH",
     "--cert", NULL},
    {"server.key_file", K_PATH, NULL, "MESHTLS_SERVER_KEY_FILE", "GRPC_SERVER_KEY_PATH", "--key",
     NULL},
    {"server.ca_file", K_PATH, NULL, "MESHTLS_SERVER_CA_FILE", "GRPC_CLIENT_CA_CERT_PATH",
     "--cacert", NULL},
    {"server.crl_file", K_PATH, NULL, "MESHTLS_SERVER_CRL_FILE", NULL, "--crl", NULL},
    {"server.require_client_cert", K_BOOL, "true", "MESHTLS_SERVER_REQUIRE_CLIENT_CERT",
     "GRPC_REQUIRE_CLIENT_CERT", "--insecure-no-client-cert", NULL},
    {"server.min_tls_version", K_ENUM, "1.3", "MESHTLS_SERVER_MIN_TLS_VERSION", NULL,
     "--tls-min-version", "1.2|1.3"},
    {"server.expiry_warn_days", K_INT, "30", "MESHTLS_SERVER_EXPIRY_WARN_DAYS", NULL, NULL,
     "0|3650"},
    {"client.cert_file", K_PATH, NULL, "MESHTLS_CLIENT_CERT_FILE", "GRPC_CLIENT_CERT_PATH",
     "--cert", NULL},
    {"client.key_file", K_PATH, NULL, "MESHTLS_CLIENT_KEY_FILE", "GRPC_CLIENT_KEY_PATH", "--key",
     NULL},
    {"client.ca_file", K_PATH, NULL, "MESHTLS_CLIENT_CA_FILE", "GRPC_SERVER_CA_CERT_PATH",
     "--cacert", NULL},
    {"client.crl_file", K_PATH, NULL, "MESHTLS_CLIENT_CRL_FILE", NULL, "--crl", NULL},
    {"client.server_name", K_STR, NULL, "MESHTLS_CLIENT_SERVER_NAME", "GRPC_SERVER_DOMAIN",
     "--server-name", NULL},
    {"client.verify_spiffe_id", K_SPIFFE, NULL, "MESHTLS_CLIENT_VERIFY_SPIFFE_ID", NULL,
     "--verify-spiffe-id", NULL},
    {"client.verify_trust_domain", K_TD, NULL, "MESHTLS_CLIENT_VERIFY_TRUST_DOMAIN", NULL,
     "--verify-trust-domain", NULL},
    {"client.min_tls_version", K_ENUM, "1.3", "MESHTLS_CLIENT_MIN_TLS_VERSION", NULL,
     "--tls-min-version", "1.2|1.3"},
    {"log.level", K_ENUM, "info", "MESHTLS_LOG_LEVEL", NULL, "--log-level",
     "debug|info|warn|error"},
    {"log.format", K_ENUM, "text", "MESHTLS_LOG_FORMAT", NULL, "--log-format", "text|json"},
    /* meshtls proxy (docs/PROXY.md); durations are "500ms", "10s", "5m", "1h" */
    {"proxy.listen", K_STR, NULL, "MESHTLS_PROXY_LISTEN", NULL, "--listen", NULL},
    {"proxy.target", K_STR, NULL, "MESHTLS_PROXY_TARGET", NULL, "--target", NULL},
    {"proxy.status", K_STR, NULL, "MESHTLS_PROXY_STATUS", NULL, "--status", NULL},
    {"proxy.workers", K_INT, NULL, "MESHTLS_PROXY_WORKERS", NULL, "--workers", "1|256"},
    {"proxy.max_conns", K_INT, "10000", "MESHTLS_PROXY_MAX_CONNS", NULL, "--max-conns",
     "1|1000000"},
    {"proxy.handshake_timeout", K_STR, "10s", "MESHTLS_PROXY_HANDSHAKE_TIMEOUT", NULL,
     "--handshake-timeout", NULL},
    {"proxy.connect_timeout", K_STR, "5s", "MESHTLS_PROXY_CONNECT_TIMEOUT", NULL,
     "--connect-timeout", NULL},
    {"proxy.idle_timeout", K_STR, "5m", "MESHTLS_PROXY_IDLE_TIMEOUT", NULL, "--idle-timeout",
     NULL},
    {"proxy.shutdown_timeout", K_STR, "30s", "MESHTLS_PROXY_SHUTDOWN_TIMEOUT", NULL,
     "--shutdown-timeout", NULL},
    {"proxy.reload_interval", K_STR, NULL, "MESHTLS_PROXY_RELOAD_INTERVAL", NULL,
     "--reload-interval", NULL},
    {"proxy.policy_file", K_PATH, NULL, "MESHTLS_PROXY_POLICY_FILE", NULL, "--policy", NULL},
    {"proxy.service", K_STR, NULL, "MESHTLS_PROXY_SERVICE", NULL, "--service", NULL},
    {"proxy.allow", K_STR, NULL, "MESHTLS_PROXY_ALLOW", NULL, "--allow-*", NULL},
    {"proxy.forward_identity", K_ENUM, NULL, "MESHTLS_PROXY_FORWARD_IDENTITY", NULL,
     "--forward-identity", "proxy-v2|http-headers"},
    {"proxy.alpn", K_STR, NULL, "MESHTLS_PROXY_ALPN", NULL, "--alpn", NULL},
    {"proxy.session_cache_size", K_INT, "20000", "MESHTLS_PROXY_SESSION_CACHE_SIZE", NULL,
     "--session-cache-size", "0|10000000"},
};
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))

struct slot {
    char *value;   /* owned */
    char *label;   /* owned: where it came from */
    int from_peer; /* FILE only: set by the peer_tls block */
};

struct meshtls_config {
    struct slot v[N_KEYS][4]; /* [key][source] */
};

static int key_index(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].name, name))
            return (int)i;
    return -1;
}

const char *meshtls_config_key(size_t i)
{
    return i < N_KEYS ? KEYS[i].name : NULL;
}

const char *meshtls_config_key_env(const char *key)
{
    static char buf[N_KEYS][128];
    int k = key_index(key);
    if (k < 0)
        return "";
    snprintf(buf[k], sizeof(buf[k]), "%s%s%s", KEYS[k].env, KEYS[k].alias ? ", " : "",
             KEYS[k].alias ? KEYS[k].alias : "");
    return buf[k];
}

int meshtls_config_new(struct meshtls_config **out)
{
    struct meshtls_config *c = calloc(1, sizeof(*c));
    if (!c)
        return MESHTLS_ENOMEM;
    *out = c;
    return 0;
}

void meshtls_config_free(struct meshtls_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_KEYS; i++)
        for (int s = 0; s < 4; s++) {
            free(cfg->v[i][s].value);
            free(cfg->v[i][s].label);
        }
    free(cfg);
}

static int parse_bool(const char *v, int *out)
{
    static const char *const T[] = {"true", "1", "yes", "on"}, *const F[] = {"false", "0", "no",
                                                                            "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, T[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, F[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Check `v` against key `k`'s type; `where` names the source in messages. */
static int validate(const struct key *k, const char *v, const char *where,
                    struct meshtls_err *err)
{
    size_t n = strlen(v);
    if (n > VALUE_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: value for %s is longer than %d bytes",
                               where, k->name, VALUE_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20)
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: value for %s has a control "
                                   "character", where, k->name);
    switch (k->type) {
    case K_PATH:
    case K_STR:
        if (n == 0)
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s is empty", where, k->name);
        return 0;
    case K_BOOL: {
        int b;
        if (parse_bool(v, &b))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%.64s' is not a boolean for %s (use true or false)",
                                   where, v, k->name);
        return 0;
    }
    case K_INT: {
        char *end;
        long min = strtol(k->choices, &end, 10), max = strtol(end + 1, NULL, 10);
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < min || x > max)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%.64s' for %s: expected a whole number from %ld to %ld",
                                   where, v, k->name, min, max);
        return 0;
    }
    case K_ENUM: {
        const char *p = k->choices;
        while (p && *p) {
            const char *bar = strchr(p, '|');
            size_t l = bar ? (size_t)(bar - p) : strlen(p);
            if (l == n && !strncmp(p, v, l))
                return 0;
            p = bar ? bar + 1 : NULL;
        }
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: '%.64s' for %s: expected one of %s",
                               where, v, k->name, k->choices);
    }
    case K_SPIFFE: {
        struct meshtls_spiffe_id id;
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (meshtls_spiffe_parse(v, n, &id, &e2))
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s: %s", where, k->name, e2.msg);
        return 0;
    }
    case K_TD: {
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (meshtls_trust_domain_validate(v, &e2))
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s: %s", where, k->name, e2.msg);
        return 0;
    }
    }
    return 0;
}

static int put(struct meshtls_config *cfg, int k, int src, const char *v, const char *label,
               int from_peer, struct meshtls_err *err)
{
    int rc = validate(&KEYS[k], v, label, err);
    if (rc)
        return rc;
    char *nv = strdup(v), *nl = strdup(label);
    if (!nv || !nl) {
        free(nv);
        free(nl);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    struct slot *s = &cfg->v[k][src];
    free(s->value);
    free(s->label);
    s->value = nv;
    s->label = nl;
    s->from_peer = from_peer;
    return 0;
}

int meshtls_config_set(struct meshtls_config *cfg, const char *key, const char *value,
                       const char *flag, struct meshtls_err *err)
{
    int k = key_index(key);
    if (k < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "unknown configuration key '%s'", key);
    return put(cfg, k, MESHTLS_SRC_FLAG, value, flag ? flag : KEYS[k].flag ? KEYS[k].flag : key,
               0, err);
}

const char *meshtls_config_get(const struct meshtls_config *cfg, const char *key,
                               const char **source)
{
    int k = key_index(key);
    if (k < 0)
        return NULL;
    for (int s = MESHTLS_SRC_FLAG; s >= MESHTLS_SRC_FILE; s--)
        if (cfg->v[k][s].value) {
            if (source)
                *source = cfg->v[k][s].label;
            return cfg->v[k][s].value;
        }
    if (source)
        *source = KEYS[k].def ? "default" : "unset";
    return KEYS[k].def;
}

int meshtls_config_load_env(struct meshtls_config *cfg, char *const *envp,
                            struct meshtls_err *err)
{
    if (!envp)
        envp = environ;
    for (size_t k = 0; k < N_KEYS; k++) {
        /* alias first, canonical second: the canonical name wins when both are set */
        const char *names[2] = {KEYS[k].alias, KEYS[k].env};
        for (int j = 0; j < 2; j++) {
            if (!names[j])
                continue;
            size_t nl = strlen(names[j]);
            for (char *const *e = envp; e && *e; e++) {
                if (strncmp(*e, names[j], nl) != 0 || (*e)[nl] != '=')
                    continue;
                int rc = put(cfg, (int)k, MESHTLS_SRC_ENV, *e + nl + 1, names[j], 0, err);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

/* ---- YAML ---------------------------------------------------------------- */

/* The parse state: the event walker plus the configuration being filled. */
struct yp {
    struct mt_yaml y;
    struct meshtls_config *cfg;
};

#define ynext(p) mt_yaml_next(&(p)->y)
#define yline(p) mt_yaml_line(&(p)->y)
#define yscalar(p) mt_yaml_scalar(&(p)->y)
#define yexpect(p, t, what) mt_yaml_expect(&(p)->y, t, what)

static const char *const PEER_KEYS[][3] = {
    /* peer_tls key, server key, client key */
    {"cert_file", "server.cert_file", "client.cert_file"},
    {"key_file", "server.key_file", "client.key_file"},
    {"ca_file", "server.ca_file", "client.ca_file"},
    {"server_name", NULL, "client.server_name"},
};

/* One section mapping: `section` is "server", "client", "log" or "peer_tls". */
static int ysection(struct yp *y, const char *section)
{
    char full[128], label[512], key[64];
    int rc = yexpect(y, YAML_MAPPING_START_EVENT, "a mapping of settings under the section");
    if (rc)
        return rc;
    for (;;) {
        if ((rc = ynext(y)))
            return rc;
        if (y->y.ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (y->y.ev.type != YAML_SCALAR_EVENT)
            return meshtls_err_set(y->y.err, MESHTLS_EPARSE, "%s:%zu: expected a setting name",
                                   y->y.name, yline(y));
        size_t line = yline(y);
        snprintf(key, sizeof(key), "%.60s", yscalar(y));
        if ((rc = ynext(y)))
            return rc;
        if (y->y.ev.type != YAML_SCALAR_EVENT)
            return meshtls_err_set(y->y.err, MESHTLS_EPARSE,
                                   "%s:%zu: %s.%s must be a single value, not a list or mapping",
                                   y->y.name, line, section, key);
        const char *val = yscalar(y);
        snprintf(label, sizeof(label), "%s:%zu", y->y.name, line);
        if (!strcmp(section, "peer_tls")) {
            size_t i;
            for (i = 0; i < 4 && strcmp(PEER_KEYS[i][0], key); i++)
                ;
            if (i == 4)
                return meshtls_err_set(y->y.err, MESHTLS_EINVAL,
                                       "%s: unknown key 'peer_tls.%s' (expected cert_file, "
                                       "key_file, ca_file or server_name)", label, key);
            for (int r = 1; r <= 2; r++) {
                int k = PEER_KEYS[i][r] ? key_index(PEER_KEYS[i][r]) : -1;
                if (k < 0)
                    continue;
                struct slot *s = &y->cfg->v[k][MESHTLS_SRC_FILE];
                if (s->value && !s->from_peer)
                    continue; /* the role's own setting wins over peer_tls */
                if ((rc = put(y->cfg, k, MESHTLS_SRC_FILE, val, label, 1, y->y.err)))
                    return rc;
            }
            continue;
        }
        snprintf(full, sizeof(full), "%s.%s", section, key);
        int k = key_index(full);
        if (k < 0)
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL,
                                   "%s: unknown key '%s' (see docs/CONFIG.md for the keys)",
                                   label, full);
        if ((rc = put(y->cfg, k, MESHTLS_SRC_FILE, val, label, 0, y->y.err)))
            return rc;
    }
}

int meshtls_config_load_buffer(struct meshtls_config *cfg, const char *buf, size_t len,
                               const char *name, struct meshtls_err *err)
{
    struct yp y = {.cfg = cfg};
    const char *label = name ? name : "(config)";
    int rc;
    if (len > CONFIG_FILE_MAX)
        return meshtls_err_set(err, MESHTLS_EPARSE, "%s: larger than %d bytes", label,
                               CONFIG_FILE_MAX);
    if ((rc = mt_yaml_open(&y.y, buf, len, label, err)) != 0)
        return rc;
    if ((rc = yexpect(&y, YAML_STREAM_START_EVENT, "a YAML stream")))
        goto out;
    if ((rc = ynext(&y)))
        goto out;
    if (y.y.ev.type == YAML_STREAM_END_EVENT)
        goto out; /* an empty file configures nothing */
    if (y.y.ev.type != YAML_DOCUMENT_START_EVENT) {
        rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s:%zu: expected a YAML document", y.y.name,
                             yline(&y));
        goto out;
    }
    if ((rc = ynext(&y)))
        goto out;
    if (y.y.ev.type == YAML_SCALAR_EVENT && y.y.ev.data.scalar.length == 0) {
        /* "---" alone */
    } else if (y.y.ev.type != YAML_MAPPING_START_EVENT) {
        rc = meshtls_err_set(err, MESHTLS_EPARSE,
                             "%s:%zu: expected a mapping with server:, client:, log: or "
                             "peer_tls:", y.y.name, yline(&y));
        goto out;
    } else {
        for (;;) {
            if ((rc = ynext(&y)))
                goto out;
            if (y.y.ev.type == YAML_MAPPING_END_EVENT)
                break;
            const char *s = y.y.ev.type == YAML_SCALAR_EVENT ? yscalar(&y) : "";
            if (strcmp(s, "server") && strcmp(s, "client") && strcmp(s, "log") &&
                strcmp(s, "peer_tls") && strcmp(s, "proxy")) {
                rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                     "%s:%zu: unknown section '%.64s' (expected server, client, "
                                     "log, proxy or peer_tls)", y.y.name, yline(&y), s);
                goto out;
            }
            char sec[16];
            snprintf(sec, sizeof(sec), "%s", s);
            if ((rc = ysection(&y, sec)))
                goto out;
        }
    }
    if ((rc = yexpect(&y, YAML_DOCUMENT_END_EVENT, "the end of the document")) ||
        (rc = yexpect(&y, YAML_STREAM_END_EVENT, "a single YAML document")))
        goto out;
out:
    mt_yaml_close(&y.y);
    return rc;
}

int meshtls_config_load_file(struct meshtls_config *cfg, const char *path,
                             struct meshtls_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = meshtls_read_file(path, CONFIG_FILE_MAX, &buf, &len, err);
    if (rc == 0)
        rc = meshtls_config_load_buffer(cfg, buf, len, path, err);
    free(buf);
    return rc;
}

/* ---- to TLS options --------------------------------------------------------- */

static const char *need(const struct meshtls_config *cfg, const char *key, int *rc,
                        struct meshtls_err *err)
{
    const char *v = meshtls_config_get(cfg, key, NULL);
    if (!v && !*rc) {
        int k = key_index(key);
        *rc = meshtls_err_set(err, MESHTLS_EINVAL,
                              "%s is not set: give %s, set %s, or put it in the config file",
                              key, KEYS[k].flag ? KEYS[k].flag : "(no flag)",
                              meshtls_config_key_env(key));
    }
    return v;
}

int meshtls_config_tls_opts(const struct meshtls_config *cfg, const char *role,
                            struct meshtls_tls_opts *out, struct meshtls_err *err)
{
    int rc = 0, server = !strcmp(role, "server");
    char k[64];
    struct meshtls_tls_opts o;
    memset(&o, 0, sizeof(o));
    if (!server && strcmp(role, "client") != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "role '%s': expected server or client", role);
#define KEY(name) (snprintf(k, sizeof(k), "%s.%s", role, name), k)
    o.cert_file = need(cfg, KEY("cert_file"), &rc, err);
    o.key_file = need(cfg, KEY("key_file"), &rc, err);
    o.ca_file = need(cfg, KEY("ca_file"), &rc, err);
    o.crl_file = meshtls_config_get(cfg, KEY("crl_file"), NULL);
    const char *mv = meshtls_config_get(cfg, KEY("min_tls_version"), NULL);
    o.min_version = mv && !strcmp(mv, "1.2") ? MESHTLS_TLS_MIN_1_2 : MESHTLS_TLS_MIN_1_3;
    if (server) {
        int req = 1;
        parse_bool(meshtls_config_get(cfg, "server.require_client_cert", NULL), &req);
        o.insecure_no_client_cert = !req;
        o.expiry_warn_days =
            (int)strtol(meshtls_config_get(cfg, "server.expiry_warn_days", NULL), NULL, 10);
    } else {
        o.server_name = meshtls_config_get(cfg, "client.server_name", NULL);
        o.verify_spiffe_id = meshtls_config_get(cfg, "client.verify_spiffe_id", NULL);
        o.verify_trust_domain = meshtls_config_get(cfg, "client.verify_trust_domain", NULL);
        if (!rc && !o.server_name && !o.verify_spiffe_id && !o.verify_trust_domain)
            rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                 "client.server_name is not set (nor client.verify_spiffe_id or "
                                 "client.verify_trust_domain): give --server-name, set "
                                 "GRPC_SERVER_DOMAIN or MESHTLS_CLIENT_SERVER_NAME, or put it "
                                 "in the config file");
    }
#undef KEY
    if (rc == 0)
        *out = o;
    return rc;
}
