/*
 * test_config.c - configuration precedence, the GRPC_* aliases, the peer_tls
 * block, registered keys, and errors that name the variable, FILE:LINE or
 * key.  Parser cases are data: input, expected message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "meshtls/config.h"
#include "meshtls/log.h"
#include "proxy.h"

/* A configuration as the meshtls command builds it: core keys plus the proxy's. */
static struct meshtls_config *fresh(void)
{
    struct meshtls_config *c = NULL;
    CHECK_INT_EQ(meshtls_config_new(&c), 0);
    CHECK_INT_EQ(px_config_register(c, NULL), 0);
    return c;
}

static int has(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fprintf(stderr, "  message '%s' lacks '%s'\n", msg, want);
    return strstr(msg, want) != NULL;
}

static int load(struct meshtls_config *c, const char *yaml, struct meshtls_err *err)
{
    return meshtls_config_load_buffer(c, yaml, strlen(yaml), "b.yaml", err);
}

/* Log lines captured by the sink. */
static char logged[2048];

static void sink(int level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    size_t n = strlen(logged);
    snprintf(logged + n, sizeof(logged) - n, "%s\n", msg);
}

TEST(precedence_flag_env_file_default)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *src = NULL;
    const char *yaml = "server:\n  cert_file: /file.crt\n  key_file: /file.key\n"
                       "  expiry_warn_days: 10\n";
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "app.yaml", &err), 0);
    char *env[] = {"GRPC_SERVER_CERT_PATH=/env.crt", "UNRELATED=1", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_set(c, "server.cert_file", "/flag.crt", "--cert", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", &src), "/flag.crt");
    CHECK_STR_EQ(src, "--cert");
    CHECK_STR_EQ(meshtls_config_get(c, "server.key_file", &src), "/file.key");
    CHECK_STR_EQ(src, "app.yaml:3");
    CHECK_STR_EQ(meshtls_config_get(c, "server.expiry_warn_days", &src), "10");
    CHECK_STR_EQ(meshtls_config_get(c, "server.min_tls_version", &src), "1.3");
    CHECK_STR_EQ(src, "default");
    CHECK(meshtls_config_get(c, "server.crl_file", &src) == NULL);
    CHECK_STR_EQ(src, "unset");
    CHECK(meshtls_config_get(c, "no.such_key", NULL) == NULL);
    meshtls_config_free(c);

    /* the same winners whatever the call order: flag, then env, then file */
    c = fresh();
    CHECK_INT_EQ(meshtls_config_set(c, "server.cert_file", "/flag.crt", NULL, &err), 0);
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "app.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", &src), "/flag.crt");
    CHECK_STR_EQ(src, "--cert"); /* the key's own flag labels it */
    meshtls_config_free(c);
    c = fresh();
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "app.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", &src), "/env.crt");
    CHECK_STR_EQ(src, "GRPC_SERVER_CERT_PATH");
    /* a later file overrides an earlier one key by key */
    const char *over = "server:\n  key_file: /over.key\n";
    CHECK_INT_EQ(meshtls_config_load_buffer(c, over, strlen(over), "over.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.key_file", &src), "/over.key");
    CHECK_STR_EQ(src, "over.yaml:2");
    CHECK_STR_EQ(meshtls_config_get(c, "server.expiry_warn_days", NULL), "10");
    meshtls_config_free(c);
}

TEST(grpc_names_map_exactly)
{
    static const char *const map[][2] = {
        {"GRPC_SERVER_CERT_PATH", "server.cert_file"},
        {"GRPC_SERVER_KEY_PATH", "server.key_file"},
        {"GRPC_CLIENT_CA_CERT_PATH", "server.ca_file"},
        {"GRPC_REQUIRE_CLIENT_CERT", "server.require_client_cert"},
        {"GRPC_SERVER_CA_CERT_PATH", "client.ca_file"},
        {"GRPC_CLIENT_CERT_PATH", "client.cert_file"},
        {"GRPC_CLIENT_KEY_PATH", "client.key_file"},
        {"GRPC_SERVER_DOMAIN", "client.server_name"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        struct meshtls_config *c = fresh();
        char var[128];
        const char *val = strstr(map[i][1], "require") ? "false" : "x.example";
        snprintf(var, sizeof(var), "%s=%s", map[i][0], val);
        char *env[] = {var, NULL};
        const char *src = NULL;
        CHECK_INT_EQ(meshtls_config_load_env(c, env, NULL), 0);
        CHECK_STR_EQ(meshtls_config_get(c, map[i][1], &src), val);
        CHECK_STR_EQ(src, map[i][0]);
        CHECK(has(meshtls_config_key_env(c, map[i][1]), map[i][0]));
        meshtls_config_free(c);
    }
    /* no other key has an alias */
    struct meshtls_config *c = fresh();
    size_t aliases = 0;
    for (size_t i = 0; meshtls_config_key(c, i); i++)
        aliases += meshtls_config_key(c, i)->alias != NULL;
    CHECK_INT_EQ(aliases, 8);

    /* the canonical MESHTLS_* name wins over its alias, and says so at debug level */
    logged[0] = '\0';
    meshtls_log_set_sink(sink, NULL);
    meshtls_log_set_level(MESHTLS_LOG_DEBUG);
    char *env[] = {"GRPC_SERVER_DOMAIN=alias", "MESHTLS_CLIENT_SERVER_NAME=canon",
                   "MESHTLS_CLIENT_SERVER_NAME=second", NULL};
    const char *src = NULL;
    CHECK_INT_EQ(meshtls_config_load_env(c, env, NULL), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "client.server_name", &src), "canon"); /* first, as getenv */
    CHECK_STR_EQ(src, "MESHTLS_CLIENT_SERVER_NAME");
    CHECK(has(logged, "MESHTLS_CLIENT_SERVER_NAME and GRPC_SERVER_DOMAIN are both set"));
    /* a MESHTLS_<SECTION>_ typo is warned about, other MESHTLS_* names are not */
    logged[0] = '\0';
    char *typo[] = {"MESHTLS_SERVER_CERT=/x", "MESHTLS_HOME=/y", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, typo, NULL), 0);
    CHECK(has(logged, "MESHTLS_SERVER_CERT is not a meshtls setting"));
    CHECK(strstr(logged, "MESHTLS_HOME") == NULL);
    meshtls_log_set_sink(NULL, NULL);
    meshtls_log_set_level(MESHTLS_LOG_INFO);
    meshtls_config_free(c);
}

TEST(booleans)
{
    static const struct {
        const char *v;
        int want; /* -1: rejected */
    } cases[] = {{"true", 1}, {"false", 0}, {"1", 1},     {"0", 0},  {"yes", 1},
                 {"no", 0},   {"TRUE", 1},  {"Off", 0},   {"on", 1}, {"maybe", -1},
                 {"2", -1},   {"", -1},     {" true", -1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct meshtls_config *c = fresh();
        struct meshtls_err err = MESHTLS_ERR_INIT;
        char var[64];
        int b = 42;
        snprintf(var, sizeof(var), "GRPC_REQUIRE_CLIENT_CERT=%s", cases[i].v);
        char *env[] = {var, NULL};
        int rc = meshtls_config_load_env(c, env, &err);
        if (cases[i].want < 0) {
            CHECK_INT_EQ(rc, MESHTLS_EINVAL);
            CHECK(has(err.msg, "GRPC_REQUIRE_CLIENT_CERT: "));
            CHECK(has(err.msg, "server.require_client_cert"));
            CHECK_INT_EQ(meshtls_config_get_bool(c, "server.require_client_cert", &b, NULL), 0);
            CHECK_INT_EQ(b, 1); /* the failed load changed nothing: the default stands */
        } else {
            CHECK_INT_EQ(rc, 0);
            CHECK_INT_EQ(meshtls_config_get_bool(c, "server.require_client_cert", &b, NULL), 0);
            CHECK_INT_EQ(b, cases[i].want);
        }
        meshtls_config_free(c);
    }
}

TEST(peer_tls_fills_both_roles)
{
    struct meshtls_config *c = fresh();
    const char *yaml = "client:\n  cert_file: /own-client.crt\n"
                       "peer_tls:\n  cert_file: /p.crt\n  key_file: /p.key\n  ca_file: /ca.crt\n"
                       "  server_name: mesh.internal\n"
                       "server:\n  ca_file: /own-server-ca.crt\n";
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *src = NULL;
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "p.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", &src), "/p.crt");
    CHECK_STR_EQ(src, "p.yaml:4");
    CHECK_STR_EQ(meshtls_config_get(c, "server.ca_file", &src), "/own-server-ca.crt");
    CHECK_STR_EQ(src, "p.yaml:9"); /* the role's own key wins, before or after peer_tls */
    CHECK_STR_EQ(meshtls_config_get(c, "client.ca_file", NULL), "/ca.crt");
    CHECK_STR_EQ(meshtls_config_get(c, "client.cert_file", NULL), "/own-client.crt");
    CHECK_STR_EQ(meshtls_config_get(c, "client.key_file", NULL), "/p.key");
    CHECK_STR_EQ(meshtls_config_get(c, "client.server_name", NULL), "mesh.internal");
    struct meshtls_tls_opts o;
    CHECK_INT_EQ(meshtls_config_client_opts(c, &o, &err), 0);
    CHECK_STR_EQ(o.server_name, "mesh.internal");
    CHECK_STR_EQ(o.cert_file, "/own-client.crt");
    CHECK_INT_EQ(o.min_version, MESHTLS_TLS_MIN_1_3);
    CHECK_INT_EQ(meshtls_config_server_opts(c, &o, &err), 0);
    CHECK_INT_EQ(o.insecure_no_client_cert, 0);
    CHECK_INT_EQ(o.expiry_warn_days, 30);
    CHECK(o.server_name == NULL);
    /* the environment still beats peer_tls */
    char *env[] = {"GRPC_SERVER_DOMAIN=grpc.internal", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_client_opts(c, &o, &err), 0);
    CHECK_STR_EQ(o.server_name, "grpc.internal");
    meshtls_config_free(c);
}

TEST(options_from_every_source)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_tls_opts o;
    long n = 0;
    const char *yaml = "server:\n  cert_file: a.crt\n  key_file: \"a.key\"\n  ca_file: 'ca.crt'\n"
                       "  min_tls_version: \"1.2\"\n  require_client_cert: no\n"
                       "  expiry_warn_days: 7\n  crl_file: crl.pem\n"
                       "proxy:\n  handshake_timeout: 500ms\n";
    CHECK_INT_EQ(load(c, yaml, &err), 0);
    CHECK_INT_EQ(meshtls_config_tls_opts(c, "server", &o, &err), 0);
    CHECK_STR_EQ(o.key_file, "a.key");
    CHECK_STR_EQ(o.crl_file, "crl.pem");
    CHECK_INT_EQ(o.min_version, MESHTLS_TLS_MIN_1_2);
    CHECK_INT_EQ(o.insecure_no_client_cert, 1);
    CHECK_INT_EQ(o.expiry_warn_days, 7);
    CHECK_INT_EQ(meshtls_config_get_int(c, "proxy.handshake_timeout", &n, &err), 0);
    CHECK_INT_EQ(n, 500);
    CHECK_INT_EQ(meshtls_config_get_int(c, "proxy.idle_timeout", &n, &err), 0);
    CHECK_INT_EQ(n, 300000); /* default 5m */
    CHECK_INT_EQ(meshtls_config_get_int(c, "proxy.workers", &n, &err), MESHTLS_ENOENT);
    CHECK_INT_EQ(meshtls_config_get_int(c, "server.cert_file", &n, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_config_tls_opts(c, "router", &o, &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "expected server or client"));
    /* the client role: a SPIFFE check stands in for a server name */
    CHECK_INT_EQ(meshtls_config_set(c, "client.cert_file", "c.crt", "--cert", &err), 0);
    CHECK_INT_EQ(meshtls_config_set(c, "client.key_file", "c.key", "--key", &err), 0);
    CHECK_INT_EQ(meshtls_config_set(c, "client.ca_file", "ca.crt", "--cacert", &err), 0);
    CHECK_INT_EQ(meshtls_config_client_opts(c, &o, &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "client.server_name is not set"));
    CHECK(has(err.msg, "--server-name"));
    CHECK(has(err.msg, "GRPC_SERVER_DOMAIN"));
    CHECK_INT_EQ(meshtls_config_set(c, "client.verify_trust_domain", "prod.example", NULL, &err),
                 0);
    CHECK_INT_EQ(meshtls_config_client_opts(c, &o, &err), 0);
    CHECK_STR_EQ(o.verify_trust_domain, "prod.example");
    CHECK(o.server_name == NULL);
    meshtls_config_free(c);
}

struct bad_case {
    const char *yaml; /* NULL: use env */
    const char *env;
    const char *want;
};

static const struct bad_case bad[] = {
    /* unknown names, with a hint when one is close */
    {"server:\n  cert_fiel: x\n", NULL,
     "b.yaml:2: unknown key 'server.cert_fiel' (did you mean 'server.cert_file'?)"},
    {"server:\n  server_name: x\n", NULL, "(did you mean 'client.server_name'?)"},
    {"servr:\n  cert_file: x\n", NULL,
     "b.yaml:1: unknown section 'servr' (did you mean 'server'?)"},
    {"peer-tls:\n  cert_file: x\n", NULL, "(did you mean 'peer_tls'?)"},
    {"peer_tls:\n  cert: x\n", NULL, "b.yaml:2: unknown key 'peer_tls.cert'"},
    {"peer_tls:\n  crl_file: x\n", NULL, "peer_tls takes cert_file, key_file, ca_file"},
    /* wrong types name FILE:LINE, key and what was expected */
    {"server:\n  require_client_cert: maybe\n", NULL, "b.yaml:2: 'maybe' is not a boolean"},
    {"server:\n  min_tls_version: 1.1\n", NULL,
     "b.yaml:2: '1.1' for server.min_tls_version: "
     "expected one of 1.2|1.3"},
    {"server:\n  expiry_warn_days: lots\n", NULL, "b.yaml:2: 'lots' for server.expiry_warn_days"},
    {"server:\n  expiry_warn_days: 9999\n", NULL, "from 0 to 3650"},
    {"server:\n  expiry_warn_days: 0x10\n", NULL, "expected a whole number"},
    {"server:\n  expiry_warn_days: 99999999999999999999999\n", NULL, "expected a whole number"},
    {"proxy:\n  handshake_timeout: soon\n", NULL, "b.yaml:2: 'soon' for proxy.handshake_timeout"},
    {"proxy:\n  handshake_timeout: 10d\n", NULL, "expected a duration"},
    {"proxy:\n  handshake_timeout: 0s\n", NULL, "expected a duration"},
    {"proxy:\n  reload_interval: 99999999999999h\n", NULL, "expected a duration"},
    {"server:\n  cert_file: [a, b]\n", NULL,
     "b.yaml:2: server.cert_file must be a single value, not a list or mapping (expected a "
     "file path)"},
    {"server:\n  cert_file:\n    nested: x\n", NULL, "server.cert_file must be a single value"},
    {"client:\n  verify_spiffe_id: http://x\n", NULL, "b.yaml:2: client.verify_spiffe_id"},
    {"server:\n  cert_file:\n", NULL, "b.yaml:2: server.cert_file has no value"},
    {"server:\n  cert_file: ~\n", NULL, "server.cert_file has no value"},
    {"server:\n  cert_file: \"\"\n", NULL, "server.cert_file is empty"},
    {"server:\n  cert_file: \"a\\tb\"\n", NULL, "contains a control character"},
    {"server:\n  cert_file: \"a\\0b\"\n", NULL, "contains a NUL byte"},
    {"peer_tls:\n  server_name: [x]\n", NULL, "peer_tls.server_name must be a single value"},
    {"server: 3\n", NULL, "b.yaml:1: server: expected a mapping of settings"},
    /* a key or section twice */
    {"server:\n  cert_file: a\n  cert_file: b\n", NULL,
     "b.yaml:3: server.cert_file is set twice (first at b.yaml:2)"},
    {"server:\n  cert_file: a\nclient: {}\nserver:\n  key_file: b\n", NULL,
     "b.yaml:4: section 'server' appears twice (first at line 1)"},
    {"peer_tls:\n  ca_file: a\n  ca_file: b\n", NULL, "b.yaml:3: peer_tls.ca_file is set twice"},
    /* YAML features a configuration does not need */
    {"server: &a\n  cert_file: x\nclient: *a\n", NULL, "b.yaml:1: YAML anchors (&a)"},
    {"server:\n  cert_file: x\nclient: *a\n", NULL, "aliases are not allowed"},
    {"server:\n  cert_file: !!str x\n", NULL, "b.yaml:2: YAML tags (tag:yaml.org,2002:str)"},
    {"server: !custom\n  cert_file: x\n", NULL, "YAML tags (!custom)"},
    {"- a\n- b\n", NULL, "b.yaml:1: expected a mapping"},
    {"just text\n", NULL, "b.yaml:1: expected a mapping"},
    {"server:\n  cert_file: \"x\n", NULL, "YAML syntax error"},
    {"server:\n\tcert_file: x\n", NULL, "YAML syntax error"},
    {"a: 1\n---\nb: 2\n", NULL, "unknown section 'a'"},
    {"log:\n  level: info\n---\nlog:\n  level: debug\n", NULL, "b.yaml:3: a second YAML document"},
    {"[server, client]: x\n", NULL, "b.yaml:1: unknown section ''"},
    /* environment: the message starts with the variable */
    {NULL, "GRPC_REQUIRE_CLIENT_CERT=perhaps", "GRPC_REQUIRE_CLIENT_CERT: 'perhaps' is not a "},
    {NULL, "MESHTLS_CLIENT_VERIFY_TRUST_DOMAIN=Bad.Org", "MESHTLS_CLIENT_VERIFY_TRUST_DOMAIN: "},
    {NULL, "MESHTLS_SERVER_CERT_FILE=", "MESHTLS_SERVER_CERT_FILE: server.cert_file is empty"},
    {NULL, "MESHTLS_LOG_LEVEL=loud", "MESHTLS_LOG_LEVEL: 'loud' for log.level: expected one of"},
    {NULL, "MESHTLS_PROXY_MAX_CONNS=-5", "MESHTLS_PROXY_MAX_CONNS: '-5' for proxy.max_conns"},
    {NULL, "GRPC_SERVER_DOMAIN=a\x01z",
     "GRPC_SERVER_DOMAIN: the value of client.server_name "
     "contains a control character"},
};

TEST(errors_name_the_field)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct meshtls_config *c = fresh();
        struct meshtls_err err = MESHTLS_ERR_INIT;
        int rc;
        if (bad[i].yaml) {
            rc = load(c, bad[i].yaml, &err);
        } else {
            char *env[] = {(char *)bad[i].env, NULL};
            rc = meshtls_config_load_env(c, env, &err);
        }
        if (rc >= 0 || !has(err.msg, bad[i].want))
            fprintf(stderr, "  case %zu: rc %d\n", i, rc);
        CHECK(rc < 0);
        CHECK(has(err.msg, bad[i].want));
        /* all or nothing: the failed load left no value behind */
        for (size_t k = 0; meshtls_config_key(c, k); k++) {
            const char *src = NULL;
            meshtls_config_get(c, meshtls_config_key(c, k)->name, &src);
            CHECK(!strcmp(src, "default") || !strcmp(src, "unset"));
        }
        meshtls_config_free(c);
    }
}

TEST(flags_are_checked_too)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *src = NULL;
    CHECK_INT_EQ(meshtls_config_set(c, "server.min_tls_version", "1.0", "--tls-min-version", &err),
                 MESHTLS_EINVAL);
    CHECK(has(err.msg, "--tls-min-version: '1.0' for server.min_tls_version"));
    CHECK_INT_EQ(meshtls_config_set(c, "server.nope", "x", "--nope", &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "unknown configuration key 'server.nope'"));
    CHECK_INT_EQ(meshtls_config_set(c, "server.require_client_cert", "false",
                                    "--insecure-no-client-cert", &err),
                 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.require_client_cert", &src), "false");
    CHECK_STR_EQ(src, "--insecure-no-client-cert");
    meshtls_config_free(c);
}

TEST(missing_required_names_key_env_and_flag)
{
    static const char *const want[][4] = {
        {"server.cert_file is not set", "--cert",
         "MESHTLS_SERVER_CERT_FILE (or "
         "GRPC_SERVER_CERT_PATH)",
         "'server:'"},
        {"server.key_file is not set", "--key",
         "MESHTLS_SERVER_KEY_FILE (or "
         "GRPC_SERVER_KEY_PATH)",
         "'peer_tls:'"},
        {"server.ca_file is not set", "--cacert",
         "MESHTLS_SERVER_CA_FILE (or "
         "GRPC_CLIENT_CA_CERT_PATH)",
         "'ca_file:'"},
    };
    const char *keys[] = {"server.cert_file", "server.key_file"};
    struct meshtls_config *c = fresh();
    for (size_t i = 0; i < 3; i++) {
        struct meshtls_err err = MESHTLS_ERR_INIT;
        struct meshtls_tls_opts o;
        memset(&o, 0x5a, sizeof(o));
        CHECK_INT_EQ(meshtls_config_tls_opts(c, "server", &o, &err), MESHTLS_EINVAL);
        CHECK(o.cert_file == (const char *)(uintptr_t)0x5a5a5a5a5a5a5a5aULL); /* untouched */
        for (int j = 0; j < 4; j++)
            CHECK(has(err.msg, want[i][j]));
        if (i < 2)
            CHECK_INT_EQ(meshtls_config_set(c, keys[i], "x", NULL, NULL), 0);
    }
    meshtls_config_free(c);
}

/* A consumer's own keys (as the proxy registers its section). */
static const struct meshtls_config_keydef extra[] = {
    {"router.listen", MESHTLS_CFG_STR, "127.0.0.1:7000", NULL, "--router-listen", NULL, NULL, 0, 0,
     "where the router listens", 0, NULL, NULL, 0},
    {"router.db", MESHTLS_CFG_PATH, NULL, "ROUTER_DB", NULL, NULL, NULL, 0, 0, "database", 0, NULL,
     NULL, 0},
    {"router.strict", MESHTLS_CFG_BOOL, "yes", NULL, "--router-lax", "false", NULL, 0, 0, "x", 0,
     NULL, NULL, 0},
    {"router.max", MESHTLS_CFG_INT, "5", NULL, NULL, NULL, NULL, 1, 10, "x", 0, NULL, NULL, 0},
};

TEST(registered_keys)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    size_t before = meshtls_config_key_count(c);
    const char *src = NULL;
    long n = 0;
    CHECK_INT_EQ(meshtls_config_add_keys(c, extra, 4, &err), 0);
    CHECK_INT_EQ(meshtls_config_key_count(c), before + 4);
    CHECK_STR_EQ(meshtls_config_key_env(c, "router.db"), "MESHTLS_ROUTER_DB, ROUTER_DB");
    const char *yaml = "router:\n  db: /var/lib/r.db\n  max: 7\n";
    CHECK_INT_EQ(load(c, yaml, &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "router.db", &src), "/var/lib/r.db");
    char *env[] = {"ROUTER_DB=/env.db", "MESHTLS_ROUTER_MAX=9", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "router.db", &src), "/env.db");
    CHECK_STR_EQ(src, "ROUTER_DB");
    CHECK_INT_EQ(meshtls_config_get_int(c, "router.max", &n, &err), 0);
    CHECK_INT_EQ(n, 9);
    CHECK_INT_EQ(load(c, "router:\n  max: 11\n", &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "b.yaml:2: '11' for router.max: expected a whole number from 1 to 10"));
    CHECK_INT_EQ(load(c, "router:\n  mx: 1\n", &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "(did you mean 'router.max'?)"));

    /* bad tables are refused whole */
    static const struct {
        struct meshtls_config_keydef d;
        int rc;
        const char *want;
    } rows[] = {
        {{"router.db", MESHTLS_CFG_PATH, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EEXIST,
         "already registered"},
        {{"Router.X", MESHTLS_CFG_STR, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "expected section.key"},
        {{"router", MESHTLS_CFG_STR, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "expected section.key"},
        {{"a.b.c", MESHTLS_CFG_STR, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "expected section.key"},
        {{"peer_tls.x", MESHTLS_CFG_STR, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "section not peer_tls"},
        {{"r2.x", 99, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "unknown type"},
        {{"r2.x", MESHTLS_CFG_ENUM, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "needs choices"},
        {{"r2.x", MESHTLS_CFG_INT, "3", NULL, NULL, NULL, NULL, 5, 1, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "empty range"},
        {{"r2.x", MESHTLS_CFG_INT, "30", NULL, NULL, NULL, NULL, 1, 5, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "default: '30' for r2.x"},
        {{"r2.x", MESHTLS_CFG_STR, NULL, "GRPC_SERVER_DOMAIN", NULL, NULL, NULL, 0, 0, "", 0, NULL,
          NULL, 0},
         MESHTLS_EEXIST,
         "environment variable is already used"},
        {{"r2.x", MESHTLS_CFG_STR, NULL, NULL, "-x", NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
         MESHTLS_EINVAL,
         "must start with --"},
        {{"r2.x", MESHTLS_CFG_STR, "d", NULL, "--x", NULL, NULL, 0, 0, "", 0, NULL, NULL,
          MESHTLS_KEY_REPEAT},
         MESHTLS_EINVAL,
         "a repeatable flag takes a value and the key has no default"},
        {{"r2.x", MESHTLS_CFG_BOOL, NULL, NULL, "--x", "true", NULL, 0, 0, "", 0, NULL, NULL,
          MESHTLS_KEY_REPEAT},
         MESHTLS_EINVAL,
         "a repeatable flag"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct meshtls_config_keydef two[2] = {
            {"r3.ok", MESHTLS_CFG_STR, NULL, NULL, NULL, NULL, NULL, 0, 0, "", 0, NULL, NULL, 0},
            rows[i].d};
        size_t count = meshtls_config_key_count(c);
        CHECK_INT_EQ(meshtls_config_add_keys(c, two, 2, &err), rows[i].rc);
        CHECK(has(err.msg, rows[i].want));
        CHECK_INT_EQ(meshtls_config_key_count(c), count); /* r3.ok was not added either */
    }
    meshtls_config_free(c);

    /* every built-in row is well-formed: the canonical name comes from the key */
    c = fresh();
    for (size_t i = 0; meshtls_config_key(c, i); i++) {
        const struct meshtls_config_keydef *d = meshtls_config_key(c, i);
        char want_env[96];
        size_t j = (size_t)snprintf(want_env, sizeof(want_env), "MESHTLS_");
        for (const char *p = d->name; *p && j + 1 < sizeof(want_env); p++)
            want_env[j++] = *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        want_env[j] = '\0';
        CHECK(!strncmp(meshtls_config_key_env(c, d->name), want_env, strlen(want_env)));
        CHECK(d->help && *d->help);
    }
    meshtls_config_free(c);
}

TEST(limits)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    size_t n = 1024 * 1024 + 10;
    char *big = malloc(n + 1);
    CHECK(big != NULL);
    if (big) {
        memset(big, '#', n);
        big[n] = '\0';
        CHECK_INT_EQ(meshtls_config_load_buffer(c, big, n, "big.yaml", &err), MESHTLS_EPARSE);
        CHECK(has(err.msg, "big.yaml: larger than 1048576 bytes"));
        /* a file just as big is refused while reading */
        char path[] = "/tmp/meshtls-test-config-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        if (fd >= 0) {
            CHECK(write(fd, big, n) == (ssize_t)n);
            close(fd);
            CHECK(meshtls_config_load_file(c, path, &err) < 0);
            CHECK(has(err.msg, path));
            unlink(path);
        }
        /* deep nesting: refused at the first level that does not fit */
        size_t depth = 100000;
        memcpy(big, "server:\n  cert_file: ", 21);
        memset(big + 21, '[', depth);
        CHECK_INT_EQ(meshtls_config_load_buffer(c, big, 21 + depth, "deep.yaml", &err),
                     MESHTLS_EINVAL);
        CHECK(has(err.msg, "deep.yaml:2: server.cert_file must be a single value"));
        memset(big, '{', depth);
        CHECK(meshtls_config_load_buffer(c, big, depth, "deep.yaml", &err) < 0);
        CHECK(has(err.msg, "deep.yaml:1: "));
        /* a long value */
        memcpy(big, "server:\n  cert_file: ", 21);
        memset(big + 21, 'a', 5000);
        CHECK_INT_EQ(meshtls_config_load_buffer(c, big, 21 + 5000, "long.yaml", &err),
                     MESHTLS_EINVAL);
        CHECK(has(err.msg, "long.yaml:2: the value of server.cert_file is longer than 4096"));
        free(big);
    }
    CHECK_INT_EQ(meshtls_config_load_file(c, "/nonexistent/app.yaml", &err) < 0, 1);
    CHECK(has(err.msg, "/nonexistent/app.yaml"));
    /* nothing, in several spellings */
    static const char *const empty[] = {"",          "# only a comment\n",   "---\n", "---\n...\n",
                                        "server:\n", "server: ~\nclient:\n", "{}\n"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        CHECK_INT_EQ(load(c, empty[i], &err), 0);
        CHECK(meshtls_config_get(c, "server.cert_file", NULL) == NULL);
    }
    CHECK_INT_EQ(meshtls_config_load_buffer(c, NULL, 0, NULL, &err), 0);
    meshtls_config_free(c);
    meshtls_config_free(NULL);
}

TEST(the_library_knows_no_proxy_keys_until_the_proxy_registers_them)
{
    struct meshtls_config *c = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    long n = 0;
    CHECK_INT_EQ(meshtls_config_new(&c), 0);
    if (!c)
        return;
    CHECK(meshtls_config_get(c, "proxy.listen", NULL) == NULL);
    CHECK_INT_EQ(meshtls_config_get_int(c, "proxy.max_conns", &n, &err), MESHTLS_EINVAL);
    CHECK(meshtls_config_get(c, "server.cert_file", NULL) == NULL); /* known, but unset */
    size_t core = meshtls_config_key_count(c);
    CHECK_INT_EQ(px_config_register(c, &err), 0);
    CHECK(meshtls_config_key_count(c) == core + px_config_nkeys);
    CHECK_INT_EQ(meshtls_config_get_int(c, "proxy.max_conns", &n, &err), 0);
    CHECK_INT_EQ(n, 10000);
    /* a second registration is refused whole: every name is taken */
    CHECK_INT_EQ(px_config_register(c, &err), MESHTLS_EEXIST);
    CHECK(meshtls_config_key_count(c) == core + px_config_nkeys);
    meshtls_config_free(c);
}

/* A command's table with the kinds of key the other commands use (meshtls ca, router). */
static const struct meshtls_config_keydef cmd_keys[] = {
    {"tool.dir", MESHTLS_CFG_PATH, NULL, NULL, "--dir", NULL, NULL, 0, 0, "directory", 0, NULL,
     NULL, 0},
    {"tool.serial", MESHTLS_CFG_STR, NULL, NULL, "--serial", NULL, NULL, 0, 0, "one serial", 0,
     NULL, NULL, MESHTLS_KEY_ARG},
    {"tool.password", MESHTLS_CFG_STR, NULL, NULL, "--password", NULL, NULL, 0, 0, "a password", 0,
     NULL, NULL, MESHTLS_KEY_SECRET},
    {"tool.store", MESHTLS_CFG_STR, NULL, NULL, "--store", NULL, NULL, 0, 0, "a URL", 0, NULL, NULL,
     MESHTLS_KEY_URL},
    {"tool.ttl", MESHTLS_CFG_DURATION, "1s", NULL, "--ttl", NULL, NULL, 0, 3600000, "0: off", 0,
     NULL, NULL, 0},
    {"tool.wait", MESHTLS_CFG_DURATION, "1s", NULL, "--wait", NULL, NULL, 1, 3600000, "x", 0, NULL,
     NULL, 0},
};
static const struct meshtls_config_flag_alias cmd_aliases[] = {{"--directory", "tool.dir"}};

TEST(positional_arguments_sit_between_flags)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *pos[4] = {0};
    size_t np = 9;
    CHECK_INT_EQ(meshtls_config_add_keys(c, cmd_keys, 6, &err), 0);
    char *argv[] = {"a", "--dir", "/d", "-", "b", "--", "--c"};
    CHECK_INT_EQ(meshtls_config_parse_cmdline(c, 7, argv, "tool", 0, NULL, 0, pos, 4, &np, &err),
                 0);
    CHECK_INT_EQ(np, 4);
    CHECK_STR_EQ(pos[3], "--c");
    CHECK_STR_EQ(pos[0], "a");
    CHECK_STR_EQ(pos[1], "-");
    CHECK_STR_EQ(pos[2], "b");
    CHECK_STR_EQ(meshtls_config_get(c, "tool.dir", NULL), "/d");
    /* one too many; and none at all where the command takes none */
    char *more[] = {"a", "b"};
    CHECK_INT_EQ(meshtls_config_parse_cmdline(c, 2, more, "tool", 0, NULL, 0, pos, 1, &np, &err),
                 MESHTLS_EPARSE);
    CHECK(has(err.msg, "unexpected argument 'b'"));
    CHECK_INT_EQ(meshtls_config_parse_args(c, 1, more, "tool", 0, NULL, 0, &err), MESHTLS_EPARSE);
    char *dash[] = {"-x"};
    CHECK_INT_EQ(meshtls_config_parse_cmdline(c, 1, dash, "tool", 0, NULL, 0, pos, 3, &np, &err),
                 MESHTLS_EPARSE);
    meshtls_config_free(c);
}

TEST(argument_keys_secrets_urls_aliases_off)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    char buf[128];
    long ms = -1;
    CHECK_INT_EQ(meshtls_config_add_keys(c, cmd_keys, 6, &err), 0);
    CHECK_INT_EQ(meshtls_config_add_flag_aliases(c, cmd_aliases, 1, &err), 0);
    static const struct meshtls_config_flag_alias bad_alias[] = {{"--x", "tool.nope"}};
    CHECK_INT_EQ(meshtls_config_add_flag_aliases(c, bad_alias, 1, &err), MESHTLS_EINVAL);
    /* an argument key: its flag only; no variable, no YAML key */
    CHECK_STR_EQ(meshtls_config_key_env(c, "tool.serial"), "");
    char *env[] = {"MESHTLS_TOOL_SERIAL=01", "MESHTLS_TOOL_PASSWORD=pw",
                   "MESHTLS_TOOL_STORE=postgres://u:hunter2@db:5432/x?sslmode=require", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK(meshtls_config_get(c, "tool.serial", NULL) == NULL);
    CHECK_INT_EQ(load(c, "tool:\n  serial: 01\n", &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "b.yaml:2") && has(err.msg, "give --serial"));
    const char *v = NULL;
    CHECK_INT_EQ(meshtls_config_need(c, "tool.serial", &v, &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "tool.serial is not set: give --serial"));
    char *argv[] = {"--serial", "0A", "--directory=/d", "--ttl", "off"};
    CHECK_INT_EQ(meshtls_config_parse_args(c, 5, argv, "tool", 0, NULL, 0, &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "tool.serial", NULL), "0A");
    CHECK_STR_EQ(meshtls_config_get(c, "tool.dir", NULL), "/d");
    CHECK_INT_EQ(meshtls_config_get_int(c, "tool.ttl", &ms, &err), 0);
    CHECK_INT_EQ(ms, 0);
    CHECK_INT_EQ(meshtls_config_set(c, "tool.wait", "off", NULL, &err), MESHTLS_EINVAL);
    /* what may be printed */
    CHECK_STR_EQ(meshtls_config_shown(c, "tool.password", buf, sizeof(buf), NULL), "***");
    CHECK_STR_EQ(meshtls_config_shown(c, "tool.store", buf, sizeof(buf), NULL),
                 "postgres://u:***@db:5432/x?sslmode=require");
    CHECK_INT_EQ(meshtls_config_set(c, "tool.store", "postgres://u@db/x", NULL, &err), 0);
    CHECK_STR_EQ(meshtls_config_shown(c, "tool.store", buf, sizeof(buf), NULL),
                 "postgres://u@db/x");
    CHECK_STR_EQ(meshtls_config_shown(c, "tool.dir", buf, sizeof(buf), NULL), "/d");
    /* --help shows the alias beside the flag */
    static char out[32768];
    FILE *f = fmemopen(out, sizeof(out) - 1, "w");
    meshtls_config_print_flags(c, f, "tool", 0, NULL, 0);
    fclose(f);
    CHECK(has(out, "--dir, --directory FILE"));
    meshtls_config_free(c);
}

int main(void)
{
    RUN(positional_arguments_sit_between_flags);
    RUN(argument_keys_secrets_urls_aliases_off);
    RUN(the_library_knows_no_proxy_keys_until_the_proxy_registers_them);
    RUN(precedence_flag_env_file_default);
    RUN(grpc_names_map_exactly);
    RUN(booleans);
    RUN(peer_tls_fills_both_roles);
    RUN(options_from_every_source);
    RUN(errors_name_the_field);
    RUN(flags_are_checked_too);
    RUN(missing_required_names_key_env_and_flag);
    RUN(registered_keys);
    RUN(limits);
    return check_summary();
}
