/*
 * proxy_config.c - the effective configuration (meshtls_config) into a struct px_config,
 * and `--check`: build everything the proxy would build at start, bind nothing.
 *
 * Every value comes from the key tables (src/lib/config_keys.c, config_keys.c here) through
 * the typed getters, which have checked type and range when the value was set: this file
 * parses no numbers.  Flags, environment and YAML therefore behave the same, and a key the
 * table has is a key the proxy applies (tests/unit/proxy/test_proxy_config.c holds every
 * row to that).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meshtls/meshtls.h"
#include "parse.h"
#include "proxy.h"

/* The effective value of `key` (NULL when unset). */
static const char *val(const struct meshtls_config *cfg, const char *key)
{
    return meshtls_config_get(cfg, key, NULL);
}

/* A boolean key (all have defaults).  @return 0, or the getter's error. */
static int get_bool(const struct meshtls_config *cfg, const char *key, int *out,
                    struct meshtls_err *err)
{
    return meshtls_config_get_bool(cfg, key, out, err);
}

/* An integer or duration (ms) key, if set: `*set` 1 and `*out` written. */
static int get_num(const struct meshtls_config *cfg, const char *key, long *out, int *set,
                   struct meshtls_err *err)
{
    *set = 0;
    if (!val(cfg, key))
        return 0;
    int rc = meshtls_config_get_int(cfg, key, out, err);
    if (rc == 0)
        *set = 1;
    return rc;
}

/* Add the rules of one allow key to `p`: items separated by '\n' (a repeated flag) or, for
 * proxy.allow, "kind=value" items separated by ','. */
static int add_rules(struct meshtls_policy *p, const struct meshtls_config *cfg, const char *key,
                     int kind, char sep, struct meshtls_err *err)
{
    const char *src = NULL, *v = meshtls_config_get(cfg, key, &src);
    char buf[4100];
    if (!v)
        return 0;
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *item = buf, *next; item && *item; item = next) {
        next = strchr(item, sep);
        if (next)
            *next++ = '\0';
        const char *value = item;
        int k = kind;
        char *eq = NULL;
        if (!kind) { /* proxy.allow: KIND=VALUE or allow-all */
            eq = strchr(item, '=');
            if (eq)
                *eq = '\0';
            k = meshtls_rule_kind_parse(item);
            value = eq ? eq + 1 : NULL;
        }
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (k && meshtls_policy_add(p, (enum meshtls_rule_kind)k,
                                    k == MESHTLS_RULE_ALLOW_ALL ? NULL : value, NULL, &e2) == 0)
            continue;
        if (kind) /* the library names the rule ("rule uri 'x': ..."); we name the flag */
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s", src, e2.msg);
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s item '%s%s%s': %s", src, key, item,
                               eq ? "=" : "", eq ? eq + 1 : "",
                               k ? e2.msg
                                 : "expected KIND=VALUE with KIND uri, cn, ou, dns, "
                                   "trust-domain, ip, email or allow-all");
    }
    return 0;
}

int px_config_rules(const struct meshtls_config *cfg, struct px_config *c, struct meshtls_err *err)
{
    static const struct {
        const char *key;
        int kind;
    } K[] = {{"proxy.allow_cn", MESHTLS_RULE_CN},
             {"proxy.allow_ou", MESHTLS_RULE_OU},
             {"proxy.allow_dns", MESHTLS_RULE_DNS},
             {"proxy.allow_uri", MESHTLS_RULE_URI},
             {"proxy.allow_trust_domain", MESHTLS_RULE_TRUST_DOMAIN},
             {"proxy.allow_ip", MESHTLS_RULE_IP},
             {"proxy.allow_email", MESHTLS_RULE_EMAIL}};
    int all = 0, rc;
    if (c->mode != PX_MODE_SERVER)
        return 0;
    if (!c->policy && (rc = meshtls_policy_new(&c->policy)) != 0)
        return meshtls_err_set(err, rc, "out of memory");
    if ((rc = get_bool(cfg, "proxy.allow_all", &all, err)) != 0)
        return rc;
    if (all && (rc = meshtls_policy_add(c->policy, MESHTLS_RULE_ALLOW_ALL, NULL, NULL, err)) != 0)
        return rc;
    for (size_t i = 0; i < sizeof(K) / sizeof(K[0]); i++)
        if ((rc = add_rules(c->policy, cfg, K[i].key, K[i].kind, '\n', err)) != 0)
            return rc;
    return add_rules(c->policy, cfg, "proxy.allow", 0, ',', err);
}

int px_config_from(const struct meshtls_config *cfg, enum px_mode mode, struct px_config *out,
                   struct meshtls_err *err)
{
    struct px_config c;
    const int server = mode == PX_MODE_SERVER;
    const char *role = server ? "server" : "client", *v, *src = NULL;
    char k[64];
    long n;
    int rc, set, b;
#define ROLE(name) (snprintf(k, sizeof(k), "%s.%s", role, name), k)
    memset(&c, 0, sizeof(c));
    c.mode = mode;
    c.listen = val(cfg, "proxy.listen");
    c.target = val(cfg, "proxy.target");
    c.status = val(cfg, "proxy.status");
    c.alpn = val(cfg, "proxy.alpn");

    /* our side's TLS: the role's keys (required ones are checked when the context is built,
     * which names the missing file) */
    c.tls.cert_file = val(cfg, ROLE("cert_file"));
    c.tls.key_file = val(cfg, ROLE("key_file"));
    c.tls.ca_file = val(cfg, ROLE("ca_file"));
    c.tls.crl_file = val(cfg, ROLE("crl_file"));
    v = val(cfg, ROLE("min_tls_version"));
    c.tls.min_version = v && !strcmp(v, "1.2") ? MESHTLS_TLS_MIN_1_2 : MESHTLS_TLS_MIN_1_3;
    if ((rc = get_bool(cfg, "proxy.partial_chain", &c.tls.partial_chain, err)) != 0)
        goto fail;
    v = val(cfg, "proxy.verify_profile");
    c.tls.verify_profile =
        v && !strcmp(v, "off") ? MESHTLS_TLS_PROFILE_OPENSSL : MESHTLS_TLS_PROFILE_RFC5280;
    if (server) {
        if ((rc = get_bool(cfg, "server.require_client_cert", &b, err)) != 0)
            goto fail;
        if (!b) {
            meshtls_config_get(cfg, "server.require_client_cert", &src);
            rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                 "%s: server.require_client_cert is false, but the proxy decides "
                                 "by the client's certificate and always requires one; remove "
                                 "the setting (or use --allow-all to admit any verified client)",
                                 src);
            goto fail;
        }
        if ((rc = get_num(cfg, "server.expiry_warn_days", &n, &set, err)) != 0)
            goto fail;
        c.tls.expiry_warn_days = set ? (int)n : 30;
    } else {
        c.tls.server_name = val(cfg, "client.server_name");
        c.tls.verify_spiffe_id = val(cfg, "client.verify_spiffe_id");
        c.tls.verify_trust_domain = val(cfg, "client.verify_trust_domain");
    }

    /* engine */
    if ((rc = get_num(cfg, "proxy.workers", &n, &set, err)) != 0)
        goto fail;
    if (set)
        c.workers = (int)n;
    else {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        c.workers = ncpu > 0 && ncpu < 256 ? (int)ncpu : 1;
    }
    static const struct {
        const char *key;
        size_t off;
    } INTS[] = {{"proxy.max_conns", offsetof(struct px_config, max_conns)},
                {"proxy.handshake_timeout", offsetof(struct px_config, handshake_timeout_ms)},
                {"proxy.connect_timeout", offsetof(struct px_config, connect_timeout_ms)},
                {"proxy.idle_timeout", offsetof(struct px_config, idle_timeout_ms)},
                {"proxy.shutdown_timeout", offsetof(struct px_config, shutdown_timeout_ms)}};
    for (size_t i = 0; i < sizeof(INTS) / sizeof(INTS[0]); i++) {
        if ((rc = get_num(cfg, INTS[i].key, &n, &set, err)) != 0)
            goto fail;
        /* every one has a default and a range within int (the table) */
        *(int *)((char *)&c + INTS[i].off) = (int)n;
    }
    if ((rc = get_num(cfg, "proxy.reload_interval", &n, &set, err)) != 0)
        goto fail;
    c.reload_interval_s = set ? (int)(n / 1000) : 0;
    if ((rc = get_bool(cfg, "proxy.watch_files", &c.watch_files, err)) != 0)
        goto fail;

    if (!server) {
        if ((rc = get_bool(cfg, "proxy.insecure_listen", &c.insecure_listen, err)) != 0)
            goto fail;
        *out = c;
        return 0;
    }
    /* server only */
    if ((rc = get_bool(cfg, "proxy.insecure_target", &c.insecure_target, err)) != 0 ||
        (rc = get_bool(cfg, "proxy.target_tls", &c.target_tls, err)) != 0)
        goto fail;
    c.target_opts.cert_file = val(cfg, "proxy.target_cert_file");
    c.target_opts.key_file = val(cfg, "proxy.target_key_file");
    c.target_opts.ca_file = val(cfg, "proxy.target_ca_file");
    c.target_opts.server_name = val(cfg, "proxy.target_server_name");
    c.target_opts.verify_spiffe_id = val(cfg, "proxy.target_verify_spiffe_id");
    if (c.target_tls) { /* default to our own identity and bundle towards the target */
        if (!c.target_opts.cert_file)
            c.target_opts.cert_file = c.tls.cert_file;
        if (!c.target_opts.key_file)
            c.target_opts.key_file = c.tls.key_file;
        if (!c.target_opts.ca_file)
            c.target_opts.ca_file = c.tls.ca_file;
        c.target_opts.min_version = c.tls.min_version;
    }
    c.target_opts.verify_profile = c.tls.verify_profile; /* the target's chain too */
    c.policy_file = val(cfg, "proxy.policy_file");
    c.service = val(cfg, "proxy.service");
    if ((v = val(cfg, "proxy.forward_identity"))) {
        c.forward_pp2 = !strcmp(v, "proxy-v2");
        c.forward_http = !strcmp(v, "http-headers");
    }
    if ((rc = get_num(cfg, "proxy.session_cache_size", &n, &set, err)) != 0)
        goto fail;
    c.session_cache_size = (size_t)n;
    if ((rc = get_num(cfg, "proxy.session_lifetime", &n, &set, err)) != 0)
        goto fail;
    c.session_lifetime_s = (int)(n / 1000);
    if ((rc = get_num(cfg, "proxy.verify_cache_size", &n, &set, err)) != 0)
        goto fail;
    c.verify_cache_size = (size_t)n;
    if ((rc = get_num(cfg, "proxy.verify_depth", &n, &set, err)) != 0)
        goto fail;
    c.tls.verify_depth = c.target_opts.verify_depth = (int)n;
    if ((rc = get_num(cfg, "proxy.tickets", &n, &set, err)) != 0)
        goto fail;
    if (set)
        c.tls.num_tickets = n == 0 ? -1 : (int)n; /* 0 in the options means "the default" */
#undef ROLE
    *out = c;
    return 0;
fail:
    px_config_release(&c);
    return rc;
}

void px_config_release(struct px_config *c)
{
    if (!c)
        return;
    meshtls_policy_free(c->policy);
    c->policy = NULL;
}

/* A numeric port of "host:port" must fit 16 bits (getaddrinfo would take 99999 and wrap
 * it); a service name ("https") is left to the resolver.  @return 0 or MESHTLS_EINVAL. */
static int port_check(const char *flag, const char *hostport, struct meshtls_err *err)
{
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    int port;
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return 0;
    if (mt_parse_int(colon + 1, 0, 65535, &port) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s '%s': the port must be 0 to 65535", flag,
                               hostport);
    return 0;
}

static int ports_check(const struct px_config *c, struct meshtls_err *err)
{
    int rc;
    if ((rc = port_check("--listen", c->listen, err)) != 0 ||
        (rc = port_check("--target", c->target, err)) != 0)
        return rc;
    return port_check("--status", c->status, err);
}

/* The keys start needs, and a policy for a server. */
static int required_check(const struct px_config *c, struct meshtls_err *err)
{
    if (!c->listen || !c->target)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--listen and --target are required (or proxy.listen / "
                               "proxy.target: MESHTLS_PROXY_LISTEN, MESHTLS_PROXY_TARGET, or "
                               "the proxy: section of --config)");
    if (c->mode == PX_MODE_SERVER && (!c->policy || meshtls_policy_size(c->policy) == 0) &&
        !c->policy_file)
        return meshtls_err_set(
            err, MESHTLS_EINVAL,
            "no access policy: give --allow-all or at least one "
            "--allow-cn/-ou/-dns/-uri/-trust-domain/-ip/-email, or --policy FILE (fail "
            "closed)");
    return 0;
}

int px_config_check_required(const struct px_config *c, struct meshtls_err *err)
{
    int rc = required_check(c, err);
    return rc ? rc : ports_check(c, err);
}

const char *px_check_class_name(enum px_check_class cl)
{
    static const char *const N[PX_CHECK_N] = {"required", "address", "plaintext hop",
                                              "policy",   "TLS",     "target TLS"};
    return (unsigned)cl < PX_CHECK_N ? N[cl] : "?";
}

/* Record the first error of class `cl`. */
static void report(struct px_check_report *rep, enum px_check_class cl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct px_check_report *rep, enum px_check_class cl, const char *fmt, ...)
{
    va_list ap;
    if (rep->msg[cl][0])
        return;
    va_start(ap, fmt);
    vsnprintf(rep->msg[cl], sizeof(rep->msg[cl]), fmt, ap);
    va_end(ap);
    rep->nerrors++;
}

int px_config_check(const struct px_config *c, struct px_check_report *rep)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct sockaddr_storage la, ta, sa;
    socklen_t ll, tl, sl;
    int have_l = 0, have_t = 0;

    if (required_check(c, &err) != 0)
        report(rep, PX_CHECK_REQUIRED, "%s", err.msg);
    if (ports_check(c, &err) != 0)
        report(rep, PX_CHECK_ADDRESS, "%s", err.msg);
    /* addresses: parsed and resolved as at start, never bound */
    if (c->listen) {
        if (mt_resolve(c->listen, 1, &la, &ll, &err) == 0)
            have_l = 1;
        else
            report(rep, PX_CHECK_ADDRESS, "--listen: %s", err.msg);
    }
    if (c->target) {
        if (mt_resolve(c->target, 0, &ta, &tl, &err) == 0)
            have_t = 1;
        else
            report(rep, PX_CHECK_ADDRESS, "--target: %s", err.msg);
    }
    if (c->status && mt_resolve(c->status, 1, &sa, &sl, &err) != 0)
        report(rep, PX_CHECK_ADDRESS, "--status: %s", err.msg);
    if (have_l && c->mode == PX_MODE_CLIENT && !c->insecure_listen && !mt_is_loopback(&la))
        report(rep, PX_CHECK_PLAINTEXT,
               "--listen %s is not a loopback address: the client side accepts plaintext; "
               "listen on 127.0.0.1 or ::1, or add --insecure-listen",
               c->listen);
    if (have_t && c->mode == PX_MODE_SERVER && !c->target_tls && !c->insecure_target &&
        !mt_is_loopback(&ta))
        report(rep, PX_CHECK_PLAINTEXT,
               "--target %s is not a loopback address: the bytes would leave this host in "
               "plaintext; use --target-tls, a loopback target, or add --insecure-target",
               c->target);
    /* the policy: the file, --service in it, the rules (the same build as every reload) */
    if (c->mode == PX_MODE_SERVER) {
        struct meshtls_policy *whole = NULL;
        if (px_policy_build(c, &whole, &err) != 0)
            report(rep, PX_CHECK_POLICY, "%s", err.msg);
        else if (meshtls_policy_size(whole) == 0 && c->policy_file)
            report(rep, PX_CHECK_POLICY,
                   "the policy file %s allows nobody%s: add rules under 'services:' or give "
                   "--allow-*",
                   c->policy_file, c->service ? " for --service" : "");
        meshtls_policy_free(whole);
    }
    /* TLS: the contexts start would build (files, key match, CA, CRL, ALPN) */
    SSL_CTX *ctx = NULL;
    int64_t not_after = 0;
    if (px_tls_build(c, &ctx, &not_after, &err) != 0) {
        /* a server context carries the policy too: that error is reported above already */
        if (!(c->mode == PX_MODE_SERVER && rep->msg[PX_CHECK_POLICY][0] &&
              strstr(rep->msg[PX_CHECK_POLICY], err.msg)))
            report(rep, PX_CHECK_TLS, "%s", err.msg);
    }
    SSL_CTX_free(ctx);
    if (c->mode == PX_MODE_SERVER && c->target_tls) {
        ctx = NULL;
        if (px_target_tls_build(c, &ctx, &err) != 0)
            report(rep, PX_CHECK_TARGET_TLS, "--target-tls: %s", err.msg);
        SSL_CTX_free(ctx);
    }
    return rep->nerrors;
}
