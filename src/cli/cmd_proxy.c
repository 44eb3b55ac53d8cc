/*
 * cmd_proxy.c - `meshtls proxy server|client`: flags into a struct
 * px_config, then px_run().  Flag names follow ghostunnel.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "parse.h"
#include "meshtls/meshtls.h"
#include "proxy.h"

static void proxy_usage(FILE *f)
{
    fputs(
        "usage: meshtls proxy server --listen ADDR --target ADDR --cert F --key F --cacert F\n"
        "                            (--allow-all | --allow-* ...) [options]\n"
        "       meshtls proxy client --listen ADDR --target ADDR --cert F --key F --cacert F\n"
        "                            (--server-name N | --verify-spiffe-id URI |\n"
        "                             --verify-trust-domain TD) [options]\n"
        "\n"
        "server: accepts mutual TLS on --listen, checks the client's identity against the\n"
        "        policy, and relays to the plaintext --target.\n"
        "client: accepts plaintext on --listen (keep it on loopback) and relays over mutual\n"
        "        TLS to --target, verifying the server's identity.\n"
        "\n"
        "TLS:\n"
        "  --cert FILE                our certificate chain (PEM, leaf first)\n"
        "  --key FILE                 our private key (PEM, mode 0600)\n"
        "  --cacert FILE              CA bundle used to verify peers (several CAs allowed)\n"
        "  --crl FILE                 CRLs; every certificate of the peer's chain is checked\n"
        "  --tls-min-version 1.2|1.3  lowest TLS version accepted (default 1.3)\n"
        "  --target-tls               server: re-encrypt to the target with mutual TLS;\n"
        "    --target-cert F --target-key F --target-cacert F   (default: --cert/--key/--cacert)\n"
        "    --target-server-name N | --target-verify-spiffe-id URI   the target's identity\n"
        "  --target-tls               server: re-encrypt to the target with mutual TLS;\n"
        "    --target-cert F --target-key F --target-cacert F  (default: --cert/--key/--cacert)\n"
        "    --target-server-name N | --target-verify-spiffe-id URI  the target's identity\n"
        "  --session-cache-size N     server: sessions kept for resumption, shared by all\n"
        "                             workers and kept across certificate reloads; a change\n"
        "                             of CA bundle or CRL invalidates them (default 20000;\n"
        "                             0 = OpenSSL's stateless tickets instead)\n"
        "  --session-lifetime D       default 5m\n"
        "  --tickets N                session tickets sent per handshake (default 1 with the\n"
        "                             cache; 0 = none, no resumption)\n"
        "  --verify-cache-size N      server: remember up to N client chains verified under\n"
        "                             the current CA bundle and CRL; validity is still\n"
        "                             enforced, any CA/CRL change empties it, policy always\n"
        "                             runs (default 10000; 0 = verify every chain in full)\n"
        "  --partial-chain            accept chains ending at any CA in --cacert (e.g. an\n"
        "                             intermediate); the root is then not checked\n"
        "  --alpn LIST                ALPN protocols, e.g. h2,http/1.1 (gRPC needs h2): the\n"
        "                             client offers them, the server picks the first it shares\n"
        "server policy (repeatable; any match allows; at least one is required):\n"
        "  --allow-all                any client with a certificate the CA bundle verifies\n"
        "  --allow-cn NAME            subject CN\n"
        "  --allow-ou NAME            subject OU\n"
        "  --allow-dns NAME           a DNS SAN\n"
        "  --allow-uri URI            a URI SAN / SPIFFE ID; '*' matches one path segment,\n"
        "                             a final '**' one or more\n"
        "  --allow-trust-domain TD    any SPIFFE ID in trust domain TD\n"
        "  --policy FILE              YAML allow-lists per local service (docs/PROXY.md)\n"
        "  --service NAME             the local service this proxy fronts: selects the\n"
        "                             policy file's rules for it\n"
        "  --forward-identity proxy-v2  send the target a PROXY protocol v2 header with the\n"
        "                             client address, TLS version, cipher, CN and SPIFFE ID\n"
        "  --forward-identity http-headers  HTTP/1.1 targets: set X-Client-Cert-Subject,\n"
        "                             X-Client-Cert-Serial and X-Forwarded-Client-Cert on every\n"
        "                             request, removing any the client sent\n"
        "client verification (one at least):\n"
        "  --server-name NAME         DNS name (or IP) the server certificate must carry; SNI\n"
        "  --verify-spiffe-id URI     exact SPIFFE ID the server must present\n"
        "  --verify-trust-domain TD   the server's SPIFFE ID must be in TD\n"
        "plaintext hops (loopback only unless you say so):\n"
        "  --insecure-listen          client: allow a plaintext --listen off loopback\n"
        "  --insecure-target          server: allow a plaintext --target off loopback\n"
        "engine:\n"
        "  --workers N                worker threads (default: one per core)\n"
        "  --max-conns N              simultaneous connections (default 10000)\n"
        "  --handshake-timeout D      default 10s (D: 500ms, 10s, 5m, 1h)\n"
        "  --connect-timeout D        connecting to the target, default 5s\n"
        "  --idle-timeout D           default 5m\n"
        "  --shutdown-timeout D       drain time after SIGTERM, default 30s\n"
        "reload (a failed reload keeps the current certificate):\n"
        "  SIGHUP                     rebuild the TLS context from the files\n"
        "  --reload-interval D        also every D\n"
        "  --no-watch                 do not reload when a TLS file changes (default: watch)\n"
        "configuration (flags > environment > YAML file; docs/CONFIG.md):\n"
        "  --config FILE              YAML with server:/client: TLS keys and a proxy: section\n"
        "                             (listen, target, status, workers, max_conns, allow,\n"
        "                             policy_file, ...); env MESHTLS_PROXY_*, GRPC_* too\n"
        "observability:\n"
        "  --status ADDR              serve /healthz, /readyz, /metrics (e.g. 127.0.0.1:9100)\n"
        "  --log-format text|json     default text\n"
        "  --log-level debug|info|warn|error\n"
        "\n"
        "See docs/PROXY.md.\n",
        f);
}

/* Parse a duration "500ms", "10s", "5m", "1h" or plain seconds. @return ms or -1. */
static long parse_duration(const char *s)
{
    int64_t ms;
    return mt_parse_duration_ms(s, 86400LL * 365 * 1000, &ms) == 0 ? (long)ms : -1;
}

static long parse_count(const char *s, long min, long max)
{
    int64_t v;
    return mt_parse_i64(s, min, max, &v) == 0 ? (long)v : -1;
}

enum {
    O_LISTEN = 256,
    O_TARGET,
    O_CERT,
    O_KEY,
    O_CACERT,
    O_CRL,
    O_TLSMIN,
    O_ALLOW_ALL,
    O_ALLOW_CN,
    O_ALLOW_OU,
    O_ALLOW_DNS,
    O_ALLOW_URI,
    O_ALLOW_TD,
    O_SERVICE,
    O_SNAME,
    O_VSPIFFE,
    O_VTD,
    O_WORKERS,
    O_MAXCONNS,
    O_HS_TO,
    O_CONN_TO,
    O_IDLE_TO,
    O_SHUT_TO,
    O_RELOAD,
    O_NOWATCH,
    O_STATUS,
    O_LOGFMT,
    O_LOGLEVEL,
    O_HELP,
    O_FORWARD,
    O_ALPN,
    O_POLICY,
    O_TTLS,
    O_TCERT,
    O_TKEY,
    O_TCACERT,
    O_TNAME,
    O_TSPIFFE,
    O_SCACHE,
    O_SLIFE,
    O_TICKETS,
    O_PARTIAL,
    O_CONFIG,
    O_INS_LISTEN,
    O_INS_TARGET,
    O_VCACHE,
    O_MAX
};

static const struct option popts[] = {{"listen", 1, 0, O_LISTEN},
                                      {"target", 1, 0, O_TARGET},
                                      {"cert", 1, 0, O_CERT},
                                      {"key", 1, 0, O_KEY},
                                      {"cacert", 1, 0, O_CACERT},
                                      {"crl", 1, 0, O_CRL},
                                      {"tls-min-version", 1, 0, O_TLSMIN},
                                      {"allow-all", 0, 0, O_ALLOW_ALL},
                                      {"allow-cn", 1, 0, O_ALLOW_CN},
                                      {"allow-ou", 1, 0, O_ALLOW_OU},
                                      {"allow-dns", 1, 0, O_ALLOW_DNS},
                                      {"allow-uri", 1, 0, O_ALLOW_URI},
                                      {"allow-trust-domain", 1, 0, O_ALLOW_TD},
                                      {"service", 1, 0, O_SERVICE},
                                      {"server-name", 1, 0, O_SNAME},
                                      {"verify-spiffe-id", 1, 0, O_VSPIFFE},
                                      {"verify-trust-domain", 1, 0, O_VTD},
                                      {"workers", 1, 0, O_WORKERS},
                                      {"max-conns", 1, 0, O_MAXCONNS},
                                      {"handshake-timeout", 1, 0, O_HS_TO},
                                      {"connect-timeout", 1, 0, O_CONN_TO},
                                      {"idle-timeout", 1, 0, O_IDLE_TO},
                                      {"shutdown-timeout", 1, 0, O_SHUT_TO},
                                      {"reload-interval", 1, 0, O_RELOAD},
                                      {"no-watch", 0, 0, O_NOWATCH},
                                      {"status", 1, 0, O_STATUS},
                                      {"log-format", 1, 0, O_LOGFMT},
                                      {"log-level", 1, 0, O_LOGLEVEL},
                                      {"help", 0, 0, O_HELP},
                                      {"forward-identity", 1, 0, O_FORWARD},
                                      {"alpn", 1, 0, O_ALPN},
                                      {"policy", 1, 0, O_POLICY},
                                      {"target-tls", 0, 0, O_TTLS},
                                      {"target-cert", 1, 0, O_TCERT},
                                      {"target-key", 1, 0, O_TKEY},
                                      {"target-cacert", 1, 0, O_TCACERT},
                                      {"target-server-name", 1, 0, O_TNAME},
                                      {"target-verify-spiffe-id", 1, 0, O_TSPIFFE},
                                      {"session-cache-size", 1, 0, O_SCACHE},
                                      {"session-lifetime", 1, 0, O_SLIFE},
                                      {"tickets", 1, 0, O_TICKETS},
                                      {"partial-chain", 0, 0, O_PARTIAL},
                                      {"config", 1, 0, O_CONFIG},
                                      {"insecure-listen", 0, 0, O_INS_LISTEN},
                                      {"insecure-target", 0, 0, O_INS_TARGET},
                                      {"verify-cache-size", 1, 0, O_VCACHE},
                                      {0, 0, 0, 0}};

/* A value from the YAML file or the environment (not a default), or NULL. */
static const char *cfg_val(const struct meshtls_config *cfg, const char *key, const char **src)
{
    const char *s = NULL, *v = meshtls_config_get(cfg, key, &s);
    if (!v || !s || !strcmp(s, "default") || !strcmp(s, "unset"))
        return NULL;
    if (src)
        *src = s;
    return v;
}

/*
 * Fill what the command line left unset from the configuration file and the
 * environment (flags > environment > file).  @return 0, or 2 with a message
 * naming the key and its source.
 */
static int apply_config(struct px_config *c, const unsigned char *seen,
                        const struct meshtls_config *cfg, size_t *cache_size, size_t *vcache_size,
                        int *cache_life, struct meshtls_err *err)
{
    const char *role = c->mode == PX_MODE_SERVER ? "server" : "client", *v, *src = NULL;
    char key[64];
    long n;
#define ROLEKEY(k) (snprintf(key, sizeof(key), "%s.%s", role, k), key)
    struct {
        int opt;
        const char *key;
        const char **field;
        int role_key;
    } strs[] = {
        {O_LISTEN, "proxy.listen", &c->listen, 0},
        {O_TARGET, "proxy.target", &c->target, 0},
        {O_STATUS, "proxy.status", &c->status, 0},
        {O_SERVICE, "proxy.service", &c->service, 0},
        {O_ALPN, "proxy.alpn", &c->alpn, 0},
        {O_CERT, "cert_file", &c->tls.cert_file, 1},
        {O_KEY, "key_file", &c->tls.key_file, 1},
        {O_CACERT, "ca_file", &c->tls.ca_file, 1},
        {O_CRL, "crl_file", &c->tls.crl_file, 1},
        {O_SNAME, "client.server_name", &c->tls.server_name, 0},
        {O_VSPIFFE, "client.verify_spiffe_id", &c->tls.verify_spiffe_id, 0},
        {O_VTD, "client.verify_trust_domain", &c->tls.verify_trust_domain, 0},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if (seen[strs[i].opt])
            continue;
        if (c->mode == PX_MODE_SERVER && strs[i].opt >= O_SNAME && strs[i].opt <= O_VTD)
            continue;
        if ((v = cfg_val(cfg, strs[i].role_key ? ROLEKEY(strs[i].key) : strs[i].key, NULL)))
            *strs[i].field = v;
    }
    if (!seen[O_TLSMIN] && (v = cfg_val(cfg, ROLEKEY("min_tls_version"), NULL)))
        c->tls.min_version = !strcmp(v, "1.2") ? MESHTLS_TLS_MIN_1_2 : MESHTLS_TLS_MIN_1_3;
    if (!seen[O_WORKERS] && (v = cfg_val(cfg, "proxy.workers", NULL)))
        c->workers = (int)parse_count(v, 1, 256); /* the loader checked type and range */
    if (!seen[O_MAXCONNS] && (v = cfg_val(cfg, "proxy.max_conns", NULL)))
        c->max_conns = (int)parse_count(v, 1, INT32_MAX);
    if (!seen[O_SCACHE] && (v = cfg_val(cfg, "proxy.session_cache_size", NULL)))
        *cache_size = (size_t)parse_count(v, 0, INT32_MAX);
    /* handshake settings (issue 5); the loader has checked types and ranges already */
    if (!seen[O_VCACHE] && cfg_val(cfg, "proxy.verify_cache_size", NULL) &&
        meshtls_config_get_int(cfg, "proxy.verify_cache_size", &n, err) == 0)
        *vcache_size = (size_t)n;
    if (!seen[O_SLIFE] && cfg_val(cfg, "proxy.session_lifetime", NULL) &&
        meshtls_config_get_int(cfg, "proxy.session_lifetime", &n, err) == 0)
        *cache_life = (int)(n / 1000);
    if (!seen[O_TICKETS] && cfg_val(cfg, "proxy.tickets", NULL) &&
        meshtls_config_get_int(cfg, "proxy.tickets", &n, err) == 0)
        c->tls.num_tickets = n == 0 ? -1 : (int)n;
    int b = 0;
    if (!seen[O_PARTIAL] && cfg_val(cfg, "proxy.partial_chain", NULL) &&
        meshtls_config_get_bool(cfg, "proxy.partial_chain", &b, err) == 0)
        c->tls.partial_chain = b;
    struct {
        int opt;
        const char *key;
        int *ms;
    } durs[] = {{O_HS_TO, "proxy.handshake_timeout", &c->handshake_timeout_ms},
                {O_CONN_TO, "proxy.connect_timeout", &c->connect_timeout_ms},
                {O_IDLE_TO, "proxy.idle_timeout", &c->idle_timeout_ms},
                {O_SHUT_TO, "proxy.shutdown_timeout", &c->shutdown_timeout_ms}};
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        if (seen[durs[i].opt] || !(v = cfg_val(cfg, durs[i].key, &src)))
            continue;
        if ((n = parse_duration(v)) <= 0 || n > 86400000L)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%s' for %s: expected a duration such as "
                                   "500ms, 10s, 5m or 1h",
                                   src, v, durs[i].key);
        *durs[i].ms = (int)n;
    }
    if (!seen[O_RELOAD] && (v = cfg_val(cfg, "proxy.reload_interval", &src))) {
        if ((n = parse_duration(v)) < 1000)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%s' for proxy.reload_interval: expected a "
                                   "duration of at least 1s",
                                   src, v);
        c->reload_interval_s = (int)(n / 1000);
    }
    if (!seen[O_FORWARD] && (v = cfg_val(cfg, "proxy.forward_identity", NULL))) {
        c->forward_pp2 = !strcmp(v, "proxy-v2");
        c->forward_http = !strcmp(v, "http-headers");
    }
    /* log.level / log.format: `meshtls config` shows them as effective, so they apply here
     * too (MESHTLS_LOG_FORMAT=json from the Kubernetes example used to be ignored) */
    if (!seen[O_LOGLEVEL] && (v = cfg_val(cfg, "log.level", &src))) {
        int lvl = meshtls_log_level_parse(v);
        if (lvl < 0)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%s' for log.level: expected debug, info, warn or error",
                                   src, v);
        meshtls_log_set_level(lvl);
    }
    if (!seen[O_LOGFMT] && (v = cfg_val(cfg, "log.format", &src))) {
        if (strcmp(v, "json") && strcmp(v, "text"))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%s' for log.format: expected text or json", src, v);
        meshtls_log_set_json(!strcmp(v, "json"));
    }
    if (!seen[O_POLICY] && (v = cfg_val(cfg, "proxy.policy_file", NULL)))
        c->policy_file = v; /* read by px_policy_build, at start and on every reload */
    /* proxy.allow: "uri=spiffe://td/svc/a,cn=orders,allow-all" (env or YAML) */
    if ((v = cfg_val(cfg, "proxy.allow", &src))) {
        char buf[4096];
        snprintf(buf, sizeof(buf), "%s", v);
        for (char *item = buf, *next; item && *item; item = next) {
            next = strchr(item, ',');
            if (next)
                *next++ = '\0';
            char *eq = strchr(item, '=');
            if (eq)
                *eq = '\0';
            int kind = meshtls_rule_kind_parse(item);
            struct meshtls_err e2 = MESHTLS_ERR_INIT;
            if (!kind || meshtls_policy_add(c->policy, (enum meshtls_rule_kind)kind,
                                            eq ? eq + 1 : NULL, NULL, &e2) != 0)
                return meshtls_err_set(err, MESHTLS_EINVAL, "%s: proxy.allow item '%s%s%s': %s",
                                       src, item, eq ? "=" : "", eq ? eq + 1 : "",
                                       kind ? e2.msg
                                            : "expected KIND=VALUE with KIND uri, cn, "
                                              "ou, dns, trust-domain or allow-all");
        }
    }
#undef ROLEKEY
    return 0;
}

static int bad(const char *flag, const char *val, const char *want)
{
    fprintf(stderr, "meshtls proxy: %s '%s': %s\n", flag, val, want);
    return 2;
}

int cmd_proxy(int argc, char **argv)
{
    struct px_config c = {0};
    size_t cache_size = 20000, vcache_size = 10000;
    int cache_life = 300;
    unsigned char seen[O_MAX] = {0};
    const char *config_file = NULL;
    struct meshtls_config *cfg = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc, status = 1, opt;
    long v;

    if (argc >= 2 && !strcmp(argv[1], "router")) /* the bastion: src/cli/cmd_router.c */
        return cmd_proxy_router(argc - 1, argv + 1);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        proxy_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "server"))
        c.mode = PX_MODE_SERVER;
    else if (!strcmp(argv[1], "client"))
        c.mode = PX_MODE_CLIENT;
    else {
        fprintf(stderr, "meshtls proxy: unknown mode '%s' (server or client)\n", argv[1]);
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c.workers = ncpu > 0 && ncpu < 256 ? (int)ncpu : 1;
    c.max_conns = 10000;
    c.handshake_timeout_ms = 10000;
    c.connect_timeout_ms = 5000;
    c.idle_timeout_ms = 300000;
    c.shutdown_timeout_ms = 30000;
    c.watch_files = 1;
    if (meshtls_policy_new(&c.policy) != 0)
        return 1;

    argc--, argv++;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", popts, NULL)) != -1) {
        int kind = 0;
        if (opt > 0 && opt < O_MAX)
            seen[opt] = 1;
        switch (opt) {
        case O_CONFIG: config_file = optarg; break;
        case O_INS_LISTEN: c.insecure_listen = 1; break;
        case O_INS_TARGET: c.insecure_target = 1; break;
        case O_LISTEN: c.listen = optarg; break;
        case O_TARGET: c.target = optarg; break;
        case O_CERT: c.tls.cert_file = optarg; break;
        case O_KEY: c.tls.key_file = optarg; break;
        case O_CACERT: c.tls.ca_file = optarg; break;
        case O_CRL: c.tls.crl_file = optarg; break;
        case O_TLSMIN:
            if (!strcmp(optarg, "1.2"))
                c.tls.min_version = MESHTLS_TLS_MIN_1_2;
            else if (strcmp(optarg, "1.3") != 0) {
                status = bad("--tls-min-version", optarg, "expected 1.2 or 1.3");
                goto out;
            }
            break;
        case O_ALLOW_ALL: kind = MESHTLS_RULE_ALLOW_ALL; break;
        case O_ALLOW_CN: kind = MESHTLS_RULE_CN; break;
        case O_ALLOW_OU: kind = MESHTLS_RULE_OU; break;
        case O_ALLOW_DNS: kind = MESHTLS_RULE_DNS; break;
        case O_ALLOW_URI: kind = MESHTLS_RULE_URI; break;
        case O_ALLOW_TD: kind = MESHTLS_RULE_TRUST_DOMAIN; break;
        case O_SERVICE: c.service = optarg; break;
        case O_SNAME: c.tls.server_name = optarg; break;
        case O_VSPIFFE: c.tls.verify_spiffe_id = optarg; break;
        case O_VTD: c.tls.verify_trust_domain = optarg; break;
        case O_WORKERS:
            if ((v = parse_count(optarg, 1, 256)) < 0) {
                status = bad("--workers", optarg, "expected 1 to 256");
                goto out;
            }
            c.workers = (int)v;
            break;
        case O_MAXCONNS:
            if ((v = parse_count(optarg, 1, 1000000)) < 0) {
                status = bad("--max-conns", optarg, "expected 1 to 1000000");
                goto out;
            }
            c.max_conns = (int)v;
            break;
        case O_HS_TO:
        case O_CONN_TO:
        case O_IDLE_TO:
        case O_SHUT_TO:
        case O_RELOAD:
            if ((v = parse_duration(optarg)) < 0 || (opt != O_RELOAD && v == 0)) {
                char flag[40];
                snprintf(flag, sizeof(flag), "--%s", popts[opt - O_LISTEN].name);
                status = bad(flag, optarg, "expected a duration such as 500ms, 10s, 5m or 1h");
                goto out;
            }
            if (opt == O_HS_TO)
                c.handshake_timeout_ms = (int)v;
            else if (opt == O_CONN_TO)
                c.connect_timeout_ms = (int)v;
            else if (opt == O_IDLE_TO)
                c.idle_timeout_ms = (int)(v > 86400000 ? 86400000 : v);
            else if (opt == O_SHUT_TO)
                c.shutdown_timeout_ms = (int)(v > 3600000 ? 3600000 : v);
            else
                c.reload_interval_s = (int)(v / 1000 ? v / 1000 : 1);
            break;
        case O_NOWATCH: c.watch_files = 0; break;
        case O_ALPN: c.alpn = optarg; break;
        case O_TTLS: c.target_tls = 1; break;
        case O_SCACHE:
            if ((v = parse_count(optarg, 0, 10000000)) < 0) {
                status = bad("--session-cache-size", optarg, "expected 0 to 10000000");
                goto out;
            }
            cache_size = (size_t)v;
            break;
        case O_SLIFE:
            if ((v = parse_duration(optarg)) < 1000 || v > 86400000L) {
                status = bad("--session-lifetime", optarg, "expected 1s to 24h");
                goto out;
            }
            cache_life = (int)(v / 1000);
            break;
        case O_TICKETS:
            if ((v = parse_count(optarg, 0, 10)) < 0) {
                status = bad("--tickets", optarg, "expected 0 to 10");
                goto out;
            }
            c.tls.num_tickets = v == 0 ? -1 : (int)v;
            break;
        case O_PARTIAL: c.tls.partial_chain = 1; break;
        case O_VCACHE:
            if ((v = parse_count(optarg, 0, 10000000)) < 0) {
                status = bad("--verify-cache-size", optarg, "expected 0 to 10000000");
                goto out;
            }
            vcache_size = (size_t)v;
            break;
        case O_TCERT: c.target_opts.cert_file = optarg; break;
        case O_TKEY: c.target_opts.key_file = optarg; break;
        case O_TCACERT: c.target_opts.ca_file = optarg; break;
        case O_TNAME: c.target_opts.server_name = optarg; break;
        case O_TSPIFFE: c.target_opts.verify_spiffe_id = optarg; break;
        case O_POLICY:
            if (c.policy_file) {
                status = bad("--policy", optarg,
                             "give one policy file (put every service's rules in it)");
                goto out;
            }
            c.policy_file = optarg;
            break;
        case O_FORWARD:
            if (!strcmp(optarg, "proxy-v2"))
                c.forward_pp2 = 1;
            else if (!strcmp(optarg, "http-headers"))
                c.forward_http = 1;
            else {
                status = bad("--forward-identity", optarg, "expected proxy-v2 or http-headers");
                goto out;
            }
            break;
        case O_STATUS: c.status = optarg; break;
        case O_LOGFMT:
            if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
                status = bad("--log-format", optarg, "expected text or json");
                goto out;
            }
            meshtls_log_set_json(!strcmp(optarg, "json"));
            break;
        case O_LOGLEVEL:
            if ((rc = meshtls_log_level_parse(optarg)) < 0) {
                status = bad("--log-level", optarg, "expected debug, info, warn or error");
                goto out;
            }
            meshtls_log_set_level(rc);
            break;
        case O_HELP:
            proxy_usage(stdout);
            status = 0;
            goto out;
        default: status = 2; goto out;
        }
        if (kind &&
            (rc = meshtls_policy_add(c.policy, kind, kind == MESHTLS_RULE_ALLOW_ALL ? NULL : optarg,
                                     NULL, &err)) != 0) {
            cli_print_err("proxy", &err, rc);
            status = 2;
            goto out;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "meshtls proxy: unexpected argument '%s'\n", argv[optind]);
        status = 2;
        goto out;
    }
    /* flags > environment > YAML file: fill what the flags left unset */
    if (meshtls_config_new(&cfg) != 0 || px_config_register(cfg, NULL) != 0)
        goto out;
    if ((config_file && (rc = meshtls_config_load_file(cfg, config_file, &err)) != 0) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)) != 0 ||
        apply_config(&c, seen, cfg, &cache_size, &vcache_size, &cache_life, &err) != 0) {
        cli_print_err("proxy", &err, rc);
        status = 2;
        goto out;
    }
    if (!c.listen || !c.target) {
        fprintf(stderr, "meshtls proxy %s: --listen and --target are required\n",
                c.mode == PX_MODE_SERVER ? "server" : "client");
        status = 2;
        goto out;
    }
    if (c.mode == PX_MODE_SERVER) {
        /* the same build every reload runs: a broken file or an unknown --service stops us
         * here, as it would refuse a reload later */
        struct meshtls_policy *whole = NULL;
        if ((rc = px_policy_build(&c, &whole, &err)) != 0) {
            cli_print_err("proxy server", &err, rc);
            status = 2;
            goto out;
        }
        size_t nrules = meshtls_policy_size(whole);
        meshtls_policy_free(whole);
        if (nrules == 0) {
            fprintf(stderr, "meshtls proxy server: no access policy: give --allow-all or at least "
                            "one --allow-cn/-ou/-dns/-uri/-trust-domain, or --policy FILE (fail "
                            "closed)\n");
            status = 2;
            goto out;
        }
    }
    if (c.mode == PX_MODE_SERVER && cache_size > 0 &&
        meshtls_session_cache_new(cache_size, cache_life, &c.tls.session_cache) != 0) {
        fprintf(stderr, "meshtls proxy server: cannot create the session cache\n");
        goto out;
    }
    if (c.mode == PX_MODE_SERVER && vcache_size > 0 &&
        meshtls_verify_cache_new(vcache_size, &c.tls.verify_cache) != 0) {
        fprintf(stderr, "meshtls proxy server: cannot create the verification cache\n");
        goto out;
    }
    px_metrics_scache = c.tls.session_cache;
    px_metrics_vcache = c.tls.verify_cache;
    if (c.target_tls) {
        if (c.mode != PX_MODE_SERVER) {
            fprintf(stderr, "meshtls proxy client: --target-tls is for server mode (the client "
                            "always speaks mTLS to its target)\n");
            status = 2;
            goto out;
        }
        /* default to our own identity and bundle towards the target */
        if (!c.target_opts.cert_file)
            c.target_opts.cert_file = c.tls.cert_file;
        if (!c.target_opts.key_file)
            c.target_opts.key_file = c.tls.key_file;
        if (!c.target_opts.ca_file)
            c.target_opts.ca_file = c.tls.ca_file;
        c.target_opts.min_version = c.tls.min_version;
    }
    if ((rc = px_run(&c, &err)) != 0) {
        cli_print_err(c.mode == PX_MODE_SERVER ? "proxy server" : "proxy client", &err, rc);
        goto out;
    }
    status = 0;
out:
    meshtls_session_cache_free(c.tls.session_cache);
    meshtls_verify_cache_free(c.tls.verify_cache);
    meshtls_policy_free(c.policy);
    meshtls_config_free(cfg);
    return status;
}
