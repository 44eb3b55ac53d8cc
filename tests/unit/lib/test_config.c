/*
 * test_config.c - configuration precedence, GRPC_* aliases, the peer_tls
 * block, and errors that name the variable, file:line or key.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "meshtls/config.h"

static struct meshtls_config *fresh(void)
{
    struct meshtls_config *c = NULL;
    meshtls_config_new(&c);
    return c;
}

static int has(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fprintf(stderr, "  message '%s' lacks '%s'\n", msg, want);
    return strstr(msg, want) != NULL;
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
    meshtls_config_free(c);
    /* env beats file, whatever the call order */
    c = fresh();
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "app.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", &src), "/env.crt");
    CHECK_STR_EQ(src, "GRPC_SERVER_CERT_PATH");
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
        meshtls_config_free(c);
    }
    /* the canonical MESHTLS_* name wins over its alias */
    struct meshtls_config *c = fresh();
    char *env[] = {"MESHTLS_CLIENT_SERVER_NAME=canon", "GRPC_SERVER_DOMAIN=alias", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, NULL), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "client.server_name", NULL), "canon");
    meshtls_config_free(c);
}

TEST(peer_tls_fills_both_roles)
{
    struct meshtls_config *c = fresh();
    const char *yaml = "client:\n  cert_file: /own-client.crt\n"
                       "peer_tls:\n  cert_file: /p.crt\n  key_file: /p.key\n  ca_file: /ca.crt\n"
                       "  server_name: mesh.internal\n";
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "p.yaml", &err), 0);
    CHECK_STR_EQ(meshtls_config_get(c, "server.cert_file", NULL), "/p.crt");
    CHECK_STR_EQ(meshtls_config_get(c, "server.ca_file", NULL), "/ca.crt");
    CHECK_STR_EQ(meshtls_config_get(c, "client.cert_file", NULL), "/own-client.crt");
    CHECK_STR_EQ(meshtls_config_get(c, "client.key_file", NULL), "/p.key");
    CHECK_STR_EQ(meshtls_config_get(c, "client.server_name", NULL), "mesh.internal");
    struct meshtls_tls_opts o;
    CHECK_INT_EQ(meshtls_config_tls_opts(c, "client", &o, &err), 0);
    CHECK_STR_EQ(o.server_name, "mesh.internal");
    CHECK_INT_EQ(meshtls_config_tls_opts(c, "server", &o, &err), 0);
    CHECK_INT_EQ(o.insecure_no_client_cert, 0);
    meshtls_config_free(c);
}

struct bad_case {
    const char *yaml; /* NULL: use env */
    const char *env;
    const char *want;
};

static const struct bad_case bad[] = {
    {"server:\n  cert_fiel: x\n", NULL, "b.yaml:2: unknown key 'server.cert_fiel'"},
    {"servr:\n  cert_file: x\n", NULL, "b.yaml:1: unknown section 'servr'"},
    {"server:\n  require_client_cert: maybe\n", NULL, "b.yaml:2: 'maybe' is not a boolean"},
    {"server:\n  min_tls_version: 1.1\n", NULL, "expected one of 1.2|1.3"},
    {"server:\n  expiry_warn_days: lots\n", NULL, "b.yaml:2: 'lots' for server.expiry_warn_days"},
    {"server:\n  cert_file: [a, b]\n", NULL, "b.yaml:2: server.cert_file must be a single value"},
    {"client:\n  verify_spiffe_id: http://x\n", NULL, "b.yaml:2: client.verify_spiffe_id"},
    {"peer_tls:\n  cert: x\n", NULL, "b.yaml:2: unknown key 'peer_tls.cert'"},
    {"server: &a\n  cert_file: x\nclient: *a\n", NULL, "aliases are not allowed"},
    {"- a\n- b\n", NULL, "b.yaml:1: expected a mapping"},
    {"server:\n  cert_file: \"x\n", NULL, "YAML syntax error"},
    {"a: 1\n---\nb: 2\n", NULL, "unknown section 'a'"},
    {NULL, "GRPC_REQUIRE_CLIENT_CERT=perhaps", "GRPC_REQUIRE_CLIENT_CERT: 'perhaps' is not a "},
    {NULL, "MESHTLS_CLIENT_VERIFY_TRUST_DOMAIN=Bad.Org", "MESHTLS_CLIENT_VERIFY_TRUST_DOMAIN: "},
    {NULL, "MESHTLS_SERVER_CERT_FILE=", "MESHTLS_SERVER_CERT_FILE: server.cert_file is empty"},
};

TEST(errors_name_the_field)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct meshtls_config *c = fresh();
        struct meshtls_err err = MESHTLS_ERR_INIT;
        int rc;
        if (bad[i].yaml) {
            rc = meshtls_config_load_buffer(c, bad[i].yaml, strlen(bad[i].yaml), "b.yaml", &err);
        } else {
            char *env[] = {(char *)bad[i].env, NULL};
            rc = meshtls_config_load_env(c, env, &err);
        }
        CHECK(rc < 0);
        CHECK(has(err.msg, bad[i].want));
        meshtls_config_free(c);
    }
}

TEST(missing_required_names_key_env_and_flag)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_tls_opts o;
    CHECK_INT_EQ(meshtls_config_tls_opts(c, "server", &o, &err), MESHTLS_EINVAL);
    CHECK(has(err.msg, "server.cert_file is not set"));
    CHECK(has(err.msg, "--cert"));
    CHECK(has(err.msg, "MESHTLS_SERVER_CERT_FILE, GRPC_SERVER_CERT_PATH"));
    meshtls_config_free(c);
}

TEST(limits)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    size_t n = 1024 * 1024 + 10;
    char *big = malloc(n);
    CHECK(big != NULL);
    if (big) {
        memset(big, '#', n);
        CHECK_INT_EQ(meshtls_config_load_buffer(c, big, n, "big.yaml", &err), MESHTLS_EPARSE);
        CHECK(has(err.msg, "larger than"));
        free(big);
    }
    CHECK_INT_EQ(meshtls_config_load_buffer(c, "", 0, "empty.yaml", &err), 0);
    CHECK_INT_EQ(meshtls_config_set(c, "server.nope", "x", "--nope", &err), MESHTLS_EINVAL);
    meshtls_config_free(c);
}

int main(void)
{
    RUN(precedence_flag_env_file_default);
    RUN(grpc_names_map_exactly);
    RUN(peer_tls_fills_both_roles);
    RUN(errors_name_the_field);
    RUN(missing_required_names_key_env_and_flag);
    RUN(limits);
    return check_summary();
}
