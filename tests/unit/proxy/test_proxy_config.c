/*
 * test_proxy_config.c - every configuration key of `meshtls proxy` is applied, from a flag,
 * from the environment and from the YAML file, with flag > environment > file (issue 12
 * s.5).  The table below must know every row of px_config_keys and of the library's keys:
 * a key added without a row here fails `every_key_has_a_row`.
 *
 * The command line is parsed by meshtls_config_parse_args() exactly as cmd_proxy.c does,
 * and the result is read from the struct px_config that px_config_from() fills.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "meshtls/config.h"
#include "meshtls/log.h"
#include "meshtls/policy.h"
#include "meshtls/spiffe.h"
#include "proxy.h"

#define SRV PX_MODE_SERVER
#define CLI PX_MODE_CLIENT

/* One key, three values: `a` by its flag (a switch gives its own value), `b` by its
 * variable, `c` in the file; `wa`, `wb`, `wc` are what the px_config field then says. */
struct row {
    const char *key;
    int mode;
    const char *a, *b, *c;
    const char *wa, *wb, *wc;
};

static const struct row ROWS[] = {
    /* the role's TLS keys */
    {"server.cert_file", SRV, "/f.crt", "/e.crt", "/y.crt", "/f.crt", "/e.crt", "/y.crt"},
    {"server.key_file", SRV, "/f.key", "/e.key", "/y.key", "/f.key", "/e.key", "/y.key"},
    {"server.ca_file", SRV, "/f.ca", "/e.ca", "/y.ca", "/f.ca", "/e.ca", "/y.ca"},
    {"server.crl_file", SRV, "/f.crl", "/e.crl", "/y.crl", "/f.crl", "/e.crl", "/y.crl"},
    {"server.min_tls_version", SRV, "1.2", "1.3", "1.2", "1.2", "1.3", "1.2"},
    {"server.expiry_warn_days", SRV, "5", "6", "7", "5", "6", "7"},
    {"client.cert_file", CLI, "/f.crt", "/e.crt", "/y.crt", "/f.crt", "/e.crt", "/y.crt"},
    {"client.key_file", CLI, "/f.key", "/e.key", "/y.key", "/f.key", "/e.key", "/y.key"},
    {"client.ca_file", CLI, "/f.ca", "/e.ca", "/y.ca", "/f.ca", "/e.ca", "/y.ca"},
    {"client.crl_file", CLI, "/f.crl", "/e.crl", "/y.crl", "/f.crl", "/e.crl", "/y.crl"},
    {"client.server_name", CLI, "f.test", "e.test", "y.test", "f.test", "e.test", "y.test"},
    {"client.verify_spiffe_id", CLI, "spiffe://t/f", "spiffe://t/e", "spiffe://t/y", "spiffe://t/f",
     "spiffe://t/e", "spiffe://t/y"},
    {"client.verify_trust_domain", CLI, "f.test", "e.test", "y.test", "f.test", "e.test", "y.test"},
    {"client.min_tls_version", CLI, "1.2", "1.3", "1.2", "1.2", "1.3", "1.2"},
    /* proxy.* */
    {"proxy.listen", SRV, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2",
     "127.0.0.1:3"},
    {"proxy.target", CLI, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2",
     "127.0.0.1:3"},
    {"proxy.insecure_listen", CLI, NULL, "false", "true", "1", "0", "1"},
    {"proxy.insecure_target", SRV, NULL, "false", "true", "1", "0", "1"},
    {"proxy.target_tls", SRV, NULL, "false", "true", "1", "0", "1"},
    {"proxy.target_cert_file", SRV, "/f", "/e", "/y", "/f", "/e", "/y"},
    {"proxy.target_key_file", SRV, "/f", "/e", "/y", "/f", "/e", "/y"},
    {"proxy.target_ca_file", SRV, "/f", "/e", "/y", "/f", "/e", "/y"},
    {"proxy.target_server_name", SRV, "f.test", "e.test", "y.test", "f.test", "e.test", "y.test"},
    {"proxy.target_verify_spiffe_id", SRV, "spiffe://t/f", "spiffe://t/e", "spiffe://t/y",
     "spiffe://t/f", "spiffe://t/e", "spiffe://t/y"},
    /* the allow keys: what the policy allows among the three values */
    {"proxy.allow_all", SRV, NULL, "false", "true", "1", "0", "1"},
    {"proxy.allow_cn", SRV, "pa", "pb", "pc", "pa", "pb", "pc"},
    {"proxy.allow_ou", SRV, "pa", "pb", "pc", "pa", "pb", "pc"},
    {"proxy.allow_dns", SRV, "pa.test", "pb.test", "pc.test", "pa.test", "pb.test", "pc.test"},
    {"proxy.allow_uri", SRV, "spiffe://t/pa", "spiffe://t/pb", "spiffe://t/pc", "spiffe://t/pa",
     "spiffe://t/pb", "spiffe://t/pc"},
    {"proxy.allow_trust_domain", SRV, "pa.test", "pb.test", "pc.test", "pa.test", "pb.test",
     "pc.test"},
    {"proxy.allow_ip", SRV, "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.0.0.0/8", "192.0.2.7",
     "2001:db8::/32"},
    {"proxy.allow_email", SRV, "a@t", "b@t", "c@t", "a@t", "b@t", "c@t"},
    {"proxy.allow", SRV, NULL, "cn=pb", "cn=pc", NULL, "cn=pb", "cn=pc"},
    {"proxy.policy_file", SRV, "/f.yaml", "/e.yaml", "/y.yaml", "/f.yaml", "/e.yaml", "/y.yaml"},
    {"proxy.service", SRV, "fs", "es", "ys", "fs", "es", "ys"},
    {"proxy.forward_identity", SRV, "proxy-v2", "http-headers", "proxy-v2", "pp2", "http", "pp2"},
    {"proxy.alpn", CLI, "h2", "http/1.1", "h2,http/1.1", "h2", "http/1.1", "h2,http/1.1"},
    {"proxy.session_cache_size", SRV, "0", "5", "6", "0", "5", "6"},
    {"proxy.session_lifetime", SRV, "1s", "2m", "1h", "1", "120", "3600"},
    {"proxy.tickets", SRV, "0", "2", "3", "-1", "2", "3"},
    {"proxy.verify_depth", SRV, "2", "3", "5", "2", "3", "5"},
    {"proxy.verify_cache_size", SRV, "0", "5", "6", "0", "5", "6"},
    {"proxy.partial_chain", CLI, NULL, "false", "true", "1", "0", "1"},
    {"proxy.verify_profile", SRV, "off", "rfc5280", "off", "0", "1", "0"},
    {"proxy.workers", SRV, "3", "4", "5", "3", "4", "5"},
    {"proxy.max_conns", CLI, "3", "4", "5", "3", "4", "5"},
    {"proxy.handshake_timeout", SRV, "500ms", "2s", "1m", "500", "2000", "60000"},
    {"proxy.connect_timeout", CLI, "500ms", "2s", "1m", "500", "2000", "60000"},
    {"proxy.idle_timeout", SRV, "500ms", "2s", "1m", "500", "2000", "60000"},
    {"proxy.shutdown_timeout", CLI, "500ms", "2s", "1m", "500", "2000", "60000"},
    {"proxy.reload_interval", SRV, "1s", "2m", "1h", "1", "120", "3600"},
    {"proxy.watch_files", SRV, NULL, "true", "false", "0", "1", "0"},
    {"proxy.status", CLI, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2",
     "127.0.0.1:3"},
};
#define NROWS (sizeof(ROWS) / sizeof(ROWS[0]))

/* Keys applied elsewhere, tested on their own below. */
static const char *const ELSEWHERE[] = {"log.level", "log.format", "server.require_client_cert"};

/* Does the policy allow an identity that `value` describes for key `key`? */
static int allows(const struct meshtls_policy *p, const char *key, const char *value)
{
    struct meshtls_identity id;
    struct meshtls_decision d;
    char *one = (char *)value, uri[128];
    memset(&id, 0, sizeof(id));
    id.cn = "nobody";
    if (!strcmp(key, "proxy.allow_cn") || !strcmp(key, "proxy.allow"))
        id.cn = strchr(value, '=') ? strchr(value, '=') + 1 : one;
    else if (!strcmp(key, "proxy.allow_ou"))
        id.ou = one;
    else if (!strcmp(key, "proxy.allow_dns")) {
        id.dns = &one;
        id.n_dns = 1;
    } else if (!strcmp(key, "proxy.allow_ip")) {
        /* an address inside the rule's range: the rule's own address part */
        snprintf(uri, sizeof(uri), "%s", value);
        if (strchr(uri, '/'))
            *strchr(uri, '/') = '\0';
        one = uri;
        id.ips = &one;
        id.n_ips = 1;
    } else if (!strcmp(key, "proxy.allow_email")) {
        id.emails = &one;
        id.n_emails = 1;
    } else if (!strcmp(key, "proxy.allow_uri") || !strcmp(key, "proxy.allow_trust_domain")) {
        if (!strcmp(key, "proxy.allow_trust_domain"))
            snprintf(uri, sizeof(uri), "spiffe://%s/x", value);
        else
            snprintf(uri, sizeof(uri), "%s", value);
        one = uri;
        id.uris = &one;
        id.n_uris = 1;
        id.spiffe_id = uri;
        meshtls_spiffe_parse(uri, strlen(uri), &id.spiffe, NULL);
    }
    meshtls_policy_check(p, &id, NULL, &d);
    return d.allow;
}

/* The px_config field that `r->key` sets, as text; 0, or -1 for a key it does not know. */
static int field(const struct px_config *c, const struct row *r, char *buf, size_t cap)
{
    const char *k = r->key, *s = NULL;
    long n = 0;
    int num = 1;
    const struct meshtls_tls_opts *t = &c->tls;
    if (!strncmp(k, "server.", 7) || !strncmp(k, "client.", 7)) {
        const char *f = k + 7;
        if (!strcmp(f, "cert_file"))
            s = t->cert_file, num = 0;
        else if (!strcmp(f, "key_file"))
            s = t->key_file, num = 0;
        else if (!strcmp(f, "ca_file"))
            s = t->ca_file, num = 0;
        else if (!strcmp(f, "crl_file"))
            s = t->crl_file, num = 0;
        else if (!strcmp(f, "server_name"))
            s = t->server_name, num = 0;
        else if (!strcmp(f, "verify_spiffe_id"))
            s = t->verify_spiffe_id, num = 0;
        else if (!strcmp(f, "verify_trust_domain"))
            s = t->verify_trust_domain, num = 0;
        else if (!strcmp(f, "min_tls_version"))
            s = t->min_version == MESHTLS_TLS_MIN_1_2 ? "1.2" : "1.3", num = 0;
        else if (!strcmp(f, "expiry_warn_days"))
            n = t->expiry_warn_days;
        else
            return -1;
    } else if (!strncmp(k, "proxy.allow", 11)) {
        size_t l = 0;
        buf[0] = '\0';
        const char *vals[] = {r->a, r->b, r->c};
        if (!strcmp(k, "proxy.allow_all")) {
            snprintf(buf, cap, "%d", allows(c->policy, "proxy.allow_cn", "anyone"));
            return 0;
        }
        for (int i = 0; i < 3; i++)
            if (vals[i] && allows(c->policy, k, vals[i]))
                l += (size_t)snprintf(buf + l, cap - l, "%s%s", l ? "," : "", vals[i]);
        return 0;
    } else if (!strcmp(k, "proxy.listen"))
        s = c->listen, num = 0;
    else if (!strcmp(k, "proxy.target"))
        s = c->target, num = 0;
    else if (!strcmp(k, "proxy.status"))
        s = c->status, num = 0;
    else if (!strcmp(k, "proxy.alpn"))
        s = c->alpn, num = 0;
    else if (!strcmp(k, "proxy.policy_file"))
        s = c->policy_file, num = 0;
    else if (!strcmp(k, "proxy.service"))
        s = c->service, num = 0;
    else if (!strcmp(k, "proxy.target_cert_file"))
        s = c->target_opts.cert_file, num = 0;
    else if (!strcmp(k, "proxy.target_key_file"))
        s = c->target_opts.key_file, num = 0;
    else if (!strcmp(k, "proxy.target_ca_file"))
        s = c->target_opts.ca_file, num = 0;
    else if (!strcmp(k, "proxy.target_server_name"))
        s = c->target_opts.server_name, num = 0;
    else if (!strcmp(k, "proxy.target_verify_spiffe_id"))
        s = c->target_opts.verify_spiffe_id, num = 0;
    else if (!strcmp(k, "proxy.forward_identity"))
        s = c->forward_pp2 ? "pp2" : c->forward_http ? "http" : "none", num = 0;
    else if (!strcmp(k, "proxy.insecure_listen"))
        n = c->insecure_listen;
    else if (!strcmp(k, "proxy.insecure_target"))
        n = c->insecure_target;
    else if (!strcmp(k, "proxy.target_tls"))
        n = c->target_tls;
    else if (!strcmp(k, "proxy.session_cache_size"))
        n = (long)c->session_cache_size;
    else if (!strcmp(k, "proxy.session_lifetime"))
        n = c->session_lifetime_s;
    else if (!strcmp(k, "proxy.tickets"))
        n = t->num_tickets;
    else if (!strcmp(k, "proxy.verify_depth"))
        n = t->verify_depth;
    else if (!strcmp(k, "proxy.verify_cache_size"))
        n = (long)c->verify_cache_size;
    else if (!strcmp(k, "proxy.partial_chain"))
        n = t->partial_chain;
    else if (!strcmp(k, "proxy.verify_profile"))
        n = t->verify_profile;
    else if (!strcmp(k, "proxy.workers"))
        n = c->workers;
    else if (!strcmp(k, "proxy.max_conns"))
        n = c->max_conns;
    else if (!strcmp(k, "proxy.handshake_timeout"))
        n = c->handshake_timeout_ms;
    else if (!strcmp(k, "proxy.connect_timeout"))
        n = c->connect_timeout_ms;
    else if (!strcmp(k, "proxy.idle_timeout"))
        n = c->idle_timeout_ms;
    else if (!strcmp(k, "proxy.shutdown_timeout"))
        n = c->shutdown_timeout_ms;
    else if (!strcmp(k, "proxy.reload_interval"))
        n = c->reload_interval_s;
    else if (!strcmp(k, "proxy.watch_files"))
        n = c->watch_files;
    else
        return -1;
    if (num)
        snprintf(buf, cap, "%ld", n);
    else
        snprintf(buf, cap, "%s", s ? s : "(null)");
    return 0;
}

static const struct row *row_of(const char *key)
{
    for (size_t i = 0; i < NROWS; i++)
        if (!strcmp(ROWS[i].key, key))
            return &ROWS[i];
    return NULL;
}

static struct meshtls_config *fresh(void)
{
    struct meshtls_config *c = NULL;
    if (meshtls_config_new(&c) != 0 || px_config_register(c, NULL) != 0)
        abort();
    return c;
}

static const char *mode_name(int mode)
{
    return mode == SRV ? "server" : "client";
}

TEST(every_key_has_a_row)
{
    struct meshtls_config *c = fresh();
    for (size_t i = 0; meshtls_config_key(c, i); i++) {
        const char *k = meshtls_config_key(c, i)->name;
        int elsewhere = 0;
        for (size_t j = 0; j < sizeof(ELSEWHERE) / sizeof(ELSEWHERE[0]); j++)
            elsewhere |= !strcmp(k, ELSEWHERE[j]);
        if (!elsewhere && !row_of(k)) {
            fprintf(stderr, "key %s has no row: is it applied?\n", k);
            CHECK(0);
        }
    }
    meshtls_config_free(c);
}

/* Configure key `r` from the sources in `srcs` ("y" file, "e" environment, "f" flag), fill a
 * px_config and compare the field with `want`. */
static void one(const struct row *r, const char *srcs, const char *want)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const struct meshtls_config_keydef *d = NULL;
    for (size_t i = 0; meshtls_config_key(c, i); i++)
        if (!strcmp(meshtls_config_key(c, i)->name, r->key))
            d = meshtls_config_key(c, i);
    CHECK(d != NULL);
    if (!d)
        return;
    const char *dot = strchr(r->key, '.');
    char yaml[256], env0[256], *env[2] = {env0, NULL};
    int rc = 0;
    if (strchr(srcs, 'y')) {
        snprintf(yaml, sizeof(yaml), "%.*s:\n  %s: \"%s\"\n", (int)(dot - r->key), r->key, dot + 1,
                 r->c);
        rc = meshtls_config_load_buffer(c, yaml, strlen(yaml), "t.yaml", &err);
        CHECK_INT_EQ(rc, 0);
    }
    if (strchr(srcs, 'e')) {
        const char *vars = meshtls_config_key_env(c, r->key); /* "MESHTLS_X[, ALIAS]" */
        snprintf(env0, sizeof(env0), "%.*s=%s", (int)strcspn(vars, ","), vars, r->b);
        rc = meshtls_config_load_env(c, env, &err);
        CHECK_INT_EQ(rc, 0);
    }
    if (strchr(srcs, 'f') && d->flag) {
        char *argv[] = {(char *)d->flag, (char *)r->a, NULL};
        rc = meshtls_config_parse_args(c, d->flag_sets ? 1 : 2, argv, mode_name(r->mode),
                                       PX_KEY_MODE(r->mode), NULL, 0, &err);
        CHECK_INT_EQ(rc, 0);
    }
    if (rc)
        fprintf(stderr, "%s: %s\n", r->key, err.msg);
    struct px_config pc;
    char got[512];
    rc = px_config_from(c, (enum px_mode)r->mode, &pc, &err);
    CHECK_INT_EQ(rc, 0);
    if (rc == 0) {
        CHECK_INT_EQ(px_config_rules(c, &pc, &err), 0);
        CHECK_INT_EQ(field(&pc, r, got, sizeof(got)), 0);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "%s from '%s': got '%s', want '%s'\n", r->key, srcs, got, want);
            CHECK(0);
        }
        px_config_release(&pc);
    }
    meshtls_config_free(c);
}

TEST(each_key_from_file_env_and_flag)
{
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &ROWS[i];
        one(r, "y", r->wc);
        one(r, "ye", r->wb);
        one(r, "e", r->wb);
        if (r->wa) {
            one(r, "yef", r->wa);
            one(r, "f", r->wa);
        }
    }
}

TEST(allow_flags_repeat_and_add_to_the_file)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    char *argv[] = {"--allow-cn", "pa", "--allow-cn=pb", "--allow-uri", "spiffe://t/x", NULL};
    const char *yaml = "proxy:\n  allow: cn=pc\n";
    CHECK_INT_EQ(meshtls_config_load_buffer(c, yaml, strlen(yaml), "t.yaml", &err), 0);
    CHECK_INT_EQ(meshtls_config_parse_args(c, 5, argv, "server", PX_KEY_SERVER, NULL, 0, &err), 0);
    struct px_config pc;
    CHECK_INT_EQ(px_config_from(c, SRV, &pc, &err), 0);
    CHECK_INT_EQ(px_config_rules(c, &pc, &err), 0);
    CHECK_INT_EQ(meshtls_policy_size(pc.policy), 4);
    CHECK(allows(pc.policy, "proxy.allow_cn", "pa"));
    CHECK(allows(pc.policy, "proxy.allow_cn", "pb"));
    CHECK(allows(pc.policy, "proxy.allow_cn", "pc"));
    CHECK(!allows(pc.policy, "proxy.allow_cn", "pd"));
    px_config_release(&pc);
    meshtls_config_free(c);
}

TEST(defaults_fill_px_config)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct px_config pc;
    CHECK_INT_EQ(px_config_from(c, SRV, &pc, &err), 0);
    CHECK_INT_EQ(pc.max_conns, 10000);
    CHECK_INT_EQ(pc.handshake_timeout_ms, 10000);
    CHECK_INT_EQ(pc.connect_timeout_ms, 5000);
    CHECK_INT_EQ(pc.idle_timeout_ms, 300000);
    CHECK_INT_EQ(pc.shutdown_timeout_ms, 30000);
    CHECK_INT_EQ(pc.reload_interval_s, 0);
    CHECK_INT_EQ(pc.watch_files, 1);
    CHECK_INT_EQ(pc.session_cache_size, 20000);
    CHECK_INT_EQ(pc.session_lifetime_s, 300);
    CHECK_INT_EQ(pc.verify_cache_size, 10000);
    CHECK_INT_EQ(pc.tls.num_tickets, 0);
    CHECK_INT_EQ(pc.tls.expiry_warn_days, 30);
    CHECK(pc.workers >= 1);
    CHECK(pc.listen == NULL && pc.target == NULL && pc.policy_file == NULL);
    CHECK_INT_EQ(px_config_rules(c, &pc, &err), 0);
    CHECK_INT_EQ(meshtls_policy_size(pc.policy), 0);
    CHECK_INT_EQ(px_config_check_required(&pc, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "--listen and --target are required") != NULL);
    px_config_release(&pc);
    meshtls_config_free(c);
}

TEST(require_client_cert_false_is_refused_by_name)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct px_config pc;
    char *env[] = {"GRPC_REQUIRE_CLIENT_CERT=false", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(px_config_from(c, SRV, &pc, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "GRPC_REQUIRE_CLIENT_CERT") != NULL);
    CHECK_INT_EQ(px_config_from(c, CLI, &pc, &err), 0); /* a server setting */
    meshtls_config_free(c);
}

TEST(log_keys_are_applied)
{
    struct meshtls_config *c = fresh();
    struct meshtls_err err = MESHTLS_ERR_INIT;
    char *env[] = {"MESHTLS_LOG_FORMAT=json", "MESHTLS_LOG_LEVEL=error", NULL};
    CHECK_INT_EQ(meshtls_config_load_env(c, env, &err), 0);
    CHECK_INT_EQ(meshtls_config_apply_log(c, &err), 0);
    meshtls_config_free(c);
    meshtls_log_set_json(0);
    meshtls_log_set_level(MESHTLS_LOG_INFO);
}

TEST(command_line_errors_name_the_flag)
{
    static const struct {
        const char *mode;
        const char *argv[4];
        const char *want;
    } T[] = {
        {"server", {"--lisen", "x"}, "unknown option '--lisen' (did you mean '--listen'?)"},
        {"client", {"--allow-cn", "x"}, "--allow-cn does not apply to this mode"},
        {"server", {"--server-name", "x"}, "--server-name does not apply to this mode"},
        {"server", {"--insecure-no-client-cert"}, "does not apply to this mode (it sets server."},
        {"server", {"--listen"}, "--listen needs a value"},
        {"server", {"--allow-all=yes"}, "--allow-all takes no value"},
        {"server", {"--policy", "a", "--policy", "b"}, "--policy is given twice: give one policy"},
        {"server", {"--max-conns", "0"}, "--max-conns: '0' for proxy.max_conns: expected a whole"},
        {"server", {"--idle-timeout", "soon"}, "--idle-timeout: 'soon' for proxy.idle_timeout"},
        {"server", {"stray"}, "unexpected argument 'stray'"},
        {"server", {"--", "x"}, "unexpected argument 'x'"},
        {"server", {"--config"}, "--config needs a value"},
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        struct meshtls_config *c = fresh();
        struct meshtls_err err = MESHTLS_ERR_INIT;
        const char *cf = NULL;
        const struct meshtls_config_opt opts[] = {{"--config", 1, &cf, NULL}};
        int argc = 0;
        while (argc < 4 && T[i].argv[argc])
            argc++;
        int mode = !strcmp(T[i].mode, "server") ? SRV : CLI;
        int rc = meshtls_config_parse_args(c, argc, (char *const *)T[i].argv, T[i].mode,
                                           PX_KEY_MODE(mode), opts, 1, &err);
        /* a value the key refuses is EINVAL; the shape of the command line is EPARSE */
        CHECK_INT_EQ(rc, strstr(T[i].want, "' for proxy.") ? MESHTLS_EINVAL : MESHTLS_EPARSE);
        if (!strstr(err.msg, T[i].want)) {
            fprintf(stderr, "case %zu: '%s' does not contain '%s'\n", i, err.msg, T[i].want);
            CHECK(0);
        }
        meshtls_config_free(c);
    }
}

TEST(help_lists_each_flag_once)
{
    struct meshtls_config *c = fresh();
    static const char *const names[] = {"server", "client"};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    meshtls_config_print_flags(c, f, NULL, PX_KEY_SERVER | PX_KEY_CLIENT, names, 2);
    fclose(f);
    for (size_t i = 0; meshtls_config_key(c, i); i++) {
        const char *flag = meshtls_config_key(c, i)->flag;
        if (!flag || meshtls_config_key(c, i)->modes == MESHTLS_MODE_LIBRARY)
            continue;
        char pat[80];
        int n = 0;
        snprintf(pat, sizeof(pat), "\n  %s ", flag);
        for (const char *p = buf; (p = strstr(p, pat)); p++)
            n++;
        snprintf(pat, sizeof(pat), "\n  %s\n", flag);
        for (const char *p = buf; (p = strstr(p, pat)); p++)
            n++;
        if (n != 1) {
            fprintf(stderr, "%s is listed %d times\n", flag, n);
            CHECK(0);
        }
    }
    CHECK(strstr(buf, "--allow-cn NAME") != NULL);
    CHECK(strstr(buf, "[server]") != NULL);
    free(buf);
    meshtls_config_free(c);
}

int main(void)
{
    RUN(every_key_has_a_row);
    RUN(each_key_from_file_env_and_flag);
    RUN(allow_flags_repeat_and_add_to_the_file);
    RUN(defaults_fill_px_config);
    RUN(require_client_cert_false_is_refused_by_name);
    RUN(log_keys_are_applied);
    RUN(command_line_errors_name_the_flag);
    RUN(help_lists_each_flag_once);
    return check_summary();
}
