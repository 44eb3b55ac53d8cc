/*
 * cmd_ca_serve.c - `meshtls ca serve` (the control plane's API) and `meshtls ca token`
 * (a one-time bootstrap token): argument parsing only; the work is in src/ca/serve*.c.
 */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "ca.h"
#include "cli.h"
#include "meshtls/config.h"
#include "db.h"
#include "parse.h"
#include "serve.h"
#include "store.h"

static const char SERVE_USAGE[] =
    "usage: meshtls ca serve --dir DIR --listen ADDR [--admin SPIFFE-ID]... [--status ADDR]\n"
    "                        [--san NAME|IP]... [--workers N] [--peer-ttl 30s] [--days 90]\n"
    "                        [--lifecycle-interval 24h|off] [--rotate-within 14] [--check]\n"
    "                        [--config FILE]\n"
    "  Serve the CA's HTTPS API (docs/CONTROL-PLANE.md).  At start the CA issues the server\n"
    "  a certificate (service meshtls-ca) for localhost, 127.0.0.1, ::1, the --listen host\n"
    "  and each --san, into DIR/serve/.  Client certificates are asked for, not required:\n"
    "  each endpoint decides (public, client certificate, or --admin identity).\n"
    "  --store sqlite:DIR/meshtls.db is accepted as another way to name DIR.\n"
    "  --check validates (store, CA files and key, addresses, options) and exits.\n"
    "  --config FILE (YAML, section ca_serve:) and MESHTLS_CA_SERVE_<KEY> variables give\n"
    "  the same settings (flags win over the environment, which wins over the file).\n";

static const char TOKEN_USAGE[] =
    "usage: meshtls ca token --dir DIR SERVICE [--ttl 10m]\n"
    "  Print a one-time bootstrap token for SERVICE (registered) on stdout, once; only its\n"
    "  hash is stored.  A service redeems it with a CSR at POST /api/v1/sign.\n";

enum {
    S_DIR = 300,
    S_STORE,
    S_LISTEN,
    S_ADMIN,
    S_STATUS,
    S_SAN,
    S_WORKERS,
    S_TTL,
    S_DAYS,
    S_LIFECYCLE,
    S_WITHIN,
    S_CHECK,
    S_CONFIG,
    S_HELP
};

static const struct option sopts[] = {{"dir", 1, 0, S_DIR},
                                      {"store", 1, 0, S_STORE},
                                      {"listen", 1, 0, S_LISTEN},
                                      {"admin", 1, 0, S_ADMIN},
                                      {"status", 1, 0, S_STATUS},
                                      {"san", 1, 0, S_SAN},
                                      {"workers", 1, 0, S_WORKERS},
                                      {"peer-ttl", 1, 0, S_TTL},
                                      {"ttl", 1, 0, S_TTL},
                                      {"days", 1, 0, S_DAYS},
                                      {"lifecycle-interval", 1, 0, S_LIFECYCLE},
                                      {"rotate-within", 1, 0, S_WITHIN},
                                      {"check", 0, 0, S_CHECK},
                                      {"help", 0, 0, S_HELP},
                                      {0, 0, 0, 0}};

static int usage(const char *sub, const char *msg)
{
    fprintf(stderr, "meshtls ca %s: %s\n(run 'meshtls ca %s --help')\n", sub, msg, sub);
    return 2;
}

/* --store sqlite:DIR/meshtls.db -> DIR (the keys live beside the store) */
static int store_dir(const char *url, char *dir, size_t cap)
{
    static const char suffix[] = "/meshtls.db";
    if (strncmp(url, "sqlite:", 7) != 0)
        return -1;
    const char *path = url + 7;
    size_t n = strlen(path), s = sizeof(suffix) - 1;
    if (n <= s || strcmp(path + n - s, suffix) != 0 || n - s >= cap)
        return -1;
    snprintf(dir, cap, "%.*s", (int)(n - s), path);
    return 0;
}

static int check_only; /* --check: validate and exit */

static int parse_common(const char *sub, int argc, char **argv, struct cp_serve_opts *o,
                        int64_t *ttl_ms, char *dirbuf, size_t dircap)
{
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", sopts, NULL)) != -1) {
        switch (opt) {
        case S_DIR: o->dir = optarg; break;
        case S_STORE:
            if (store_dir(optarg, dirbuf, dircap) != 0) {
                mt_db_url_hide_password(optarg);
                return usage(sub, "--store: only sqlite:DIR/meshtls.db for now (PostgreSQL "
                                  "stores are not yet supported by the CA); or give --dir DIR");
            }
            o->dir = dirbuf;
            break;
        case S_LISTEN: o->listen = optarg; break;
        case S_ADMIN:
            if (o->n_admins == CP_ADMINS_MAX)
                return usage(sub, "too many --admin (32 at most)");
            if (strncmp(optarg, "spiffe://", 9) != 0)
                return usage(sub, "--admin takes a SPIFFE ID (spiffe://TD/svc/NAME)");
            o->admins[o->n_admins++] = optarg;
            break;
        case S_STATUS: o->status = optarg; break;
        case S_SAN:
            if (o->n_sans == CP_SANS_MAX)
                return usage(sub, "too many --san (16 at most)");
            o->sans[o->n_sans++] = optarg;
            break;
        case S_WORKERS:
            if (mt_parse_int(optarg, 1, 64, &o->workers))
                return usage(sub, "--workers: expected 1 to 64");
            break;
        case S_TTL:
            if (mt_parse_duration_ms(optarg, 366LL * 86400 * 1000, ttl_ms) || *ttl_ms < 1000)
                return usage(sub, "--ttl/--peer-ttl: expected a duration such as 30s, 10m, 1h");
            break;
        case S_DAYS:
            if (mt_parse_int(optarg, 1, CA_LEAF_DAYS_MAX, &o->leaf_days))
                return usage(sub, "--days: expected 1 to 825");
            break;
        case S_LIFECYCLE:
            if (!strcmp(optarg, "0") || !strcmp(optarg, "off"))
                o->lifecycle_ms = 0;
            else if (mt_parse_duration_ms(optarg, 366LL * 86400 * 1000, &o->lifecycle_ms) ||
                     o->lifecycle_ms < 1000)
                return usage(sub, "--lifecycle-interval: a duration of 1s or more (24h), or off");
            break;
        case S_WITHIN:
            if (mt_parse_int(optarg, 0, 824, &o->rotate_within_days))
                return usage(sub, "--rotate-within: days, 0 to 824 (14)");
            break;
        case S_CHECK: check_only = 1; break;
        case S_HELP: return 1;
        default: return 2;
        }
    }
    if (!o->dir)
        return usage(sub, "--dir DIR is required (the CA directory)");
    return 0;
}

/* name, type, default, alias, flag, flag_sets, choices, min, max, help: flags, the
 * environment (MESHTLS_CA_SERVE_<KEY>) and the `ca_serve:` section of --config FILE */
static const struct meshtls_config_keydef serve_keys[] = {
    {"ca_serve.dir", MESHTLS_CFG_PATH, NULL, NULL, "--dir", NULL, NULL, 0, 0,
     "the CA directory (keys and meshtls.db)", 0, NULL, NULL, 0},
    {"ca_serve.listen", MESHTLS_CFG_STR, NULL, NULL, "--listen", NULL, NULL, 0, 0,
     "address of the HTTPS API", 0, NULL, NULL, 0},
    {"ca_serve.status", MESHTLS_CFG_STR, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "address of plain-HTTP /healthz, /readyz, /metrics and OCSP", 0, NULL, NULL, 0},
    {"ca_serve.admin", MESHTLS_CFG_STR, NULL, NULL, "--admin", NULL, NULL, 0, 0,
     "administrator SPIFFE IDs, comma-separated (flags --admin add to it)", 0, NULL, NULL, 0},
    {"ca_serve.san", MESHTLS_CFG_STR, NULL, NULL, "--san", NULL, NULL, 0, 0,
     "more DNS names / IPs of the server certificate, comma-separated", 0, NULL, NULL, 0},
    {"ca_serve.workers", MESHTLS_CFG_INT, "2", NULL, "--workers", NULL, NULL, 1, 64,
     "event-loop threads", 0, NULL, NULL, 0},
    {"ca_serve.peer_ttl", MESHTLS_CFG_DURATION, "30s", NULL, "--peer-ttl", NULL, NULL, 1000,
     366L * 86400000L, "an /api/peers registration lives this long without a heartbeat", 0, NULL,
     NULL, 0},
    {"ca_serve.days", MESHTLS_CFG_INT, "90", NULL, "--days", NULL, NULL, 1, CA_LEAF_DAYS_MAX,
     "validity of certificates issued through the API and rotations", 0, NULL, NULL, 0},
    {"ca_serve.lifecycle", MESHTLS_CFG_BOOL, "true", NULL, NULL, NULL, NULL, 0, 0,
     "run the lifecycle worker (--lifecycle-interval off sets false)", 0, NULL, NULL, 0},
    {"ca_serve.lifecycle_interval", MESHTLS_CFG_DURATION, "24h", NULL, "--lifecycle-interval", NULL,
     NULL, 1000, 366L * 86400000L, "how often the lifecycle worker runs", 0, NULL, NULL, 0},
    {"ca_serve.rotate_within", MESHTLS_CFG_INT, "14", NULL, "--rotate-within", NULL, NULL, 0, 824,
     "the worker rotates certificates expiring within this many days", 0, NULL, NULL, 0},
};
#define N_SERVE_KEYS (sizeof(serve_keys) / sizeof(serve_keys[0]))

/* Split a comma-separated list (in `buf`, modified) into v[0..*n) (at most cap). */
static int split_list(char *buf, const char **v, size_t *n, size_t cap)
{
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (!*t)
            continue;
        if (*n == cap)
            return -1;
        v[(*n)++] = t;
    }
    return 0;
}

/* A list key: what the configuration says, then what repeated flags add. */
static void join_list(char *out, size_t cap, const char *cfg_value, char **flags, size_t n)
{
    out[0] = '\0';
    size_t o = 0;
    if (cfg_value)
        o = (size_t)snprintf(out, cap, "%s", cfg_value);
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? "," : "", flags[i]);
}

int cmd_ca_serve(int argc, char **argv)
{
    static char admins_buf[16384], sans_buf[4096], dirbuf[4096];
    char *admin_flags[CP_ADMINS_MAX], *san_flags[CP_SANS_MAX];
    size_t n_admin_flags = 0, n_san_flags = 0;
    const char *config_file = NULL;
    struct cp_serve_opts o;
    cp_serve_opts_default(&o);
    struct meshtls_config *cfg = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc, opt, ret = 2;
    static const struct option lopts[] = {{"dir", 1, 0, S_DIR},
                                          {"store", 1, 0, S_STORE},
                                          {"listen", 1, 0, S_LISTEN},
                                          {"admin", 1, 0, S_ADMIN},
                                          {"status", 1, 0, S_STATUS},
                                          {"san", 1, 0, S_SAN},
                                          {"workers", 1, 0, S_WORKERS},
                                          {"peer-ttl", 1, 0, S_TTL},
                                          {"days", 1, 0, S_DAYS},
                                          {"lifecycle-interval", 1, 0, S_LIFECYCLE},
                                          {"rotate-within", 1, 0, S_WITHIN},
                                          {"check", 0, 0, S_CHECK},
                                          {"config", 1, 0, S_CONFIG},
                                          {"help", 0, 0, S_HELP},
                                          {0, 0, 0, 0}};
    if (meshtls_config_new(&cfg) != 0 ||
        meshtls_config_add_keys(cfg, serve_keys, N_SERVE_KEYS, &err) != 0) {
        cli_print_err("ca serve", &err, MESHTLS_ENOMEM);
        meshtls_config_free(cfg);
        return 1;
    }
    /* first pass: --config and --help (flags are applied after the file and environment) */
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        if (opt == S_CONFIG)
            config_file = optarg;
        if (opt == S_HELP) {
            fputs(SERVE_USAGE, stdout);
            meshtls_config_free(cfg);
            return 0;
        }
    }
    opterr = 1;
    if ((config_file && (rc = meshtls_config_load_file(cfg, config_file, &err)) != 0) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)) != 0) {
        cli_print_err("ca serve", &err, rc);
        meshtls_config_free(cfg);
        return 2;
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        const char *key = NULL;
        switch (opt) {
        case S_DIR: key = "ca_serve.dir"; break;
        case S_STORE:
            if (store_dir(optarg, dirbuf, sizeof(dirbuf)) != 0) {
                mt_db_url_hide_password(optarg);
                usage("serve", "--store: only sqlite:DIR/meshtls.db for now (PostgreSQL stores "
                               "are not yet supported by the CA); or give --dir DIR");
                goto out;
            }
            if ((rc = meshtls_config_set(cfg, "ca_serve.dir", dirbuf, "--store", &err)))
                goto bad;
            break;
        case S_LISTEN: key = "ca_serve.listen"; break;
        case S_STATUS: key = "ca_serve.status"; break;
        case S_WORKERS: key = "ca_serve.workers"; break;
        case S_TTL: key = "ca_serve.peer_ttl"; break;
        case S_DAYS: key = "ca_serve.days"; break;
        case S_WITHIN: key = "ca_serve.rotate_within"; break;
        case S_LIFECYCLE:
            if (!strcmp(optarg, "0") || !strcmp(optarg, "off")) {
                if ((rc = meshtls_config_set(cfg, "ca_serve.lifecycle", "false",
                                             "--lifecycle-interval", &err)))
                    goto bad;
            } else {
                key = "ca_serve.lifecycle_interval";
            }
            break;
        case S_ADMIN:
            if (n_admin_flags == CP_ADMINS_MAX) {
                usage("serve", "too many --admin (32 at most)");
                goto out;
            }
            admin_flags[n_admin_flags++] = optarg;
            break;
        case S_SAN:
            if (n_san_flags == CP_SANS_MAX) {
                usage("serve", "too many --san (16 at most)");
                goto out;
            }
            san_flags[n_san_flags++] = optarg;
            break;
        case S_CHECK: check_only = 1; break;
        case S_CONFIG: break;
        default: goto out;
        }
        if (key && (rc = meshtls_config_set(cfg, key, optarg, NULL, &err)))
            goto bad;
    }
    if (optind != argc) {
        usage("serve", "unexpected argument");
        goto out;
    }
    long v;
    static char absdir[PATH_MAX];
    o.dir = meshtls_config_get(cfg, "ca_serve.dir", NULL);
    /* absolute: the CA records where it wrote each certificate, and rotates into it */
    if (o.dir && realpath(o.dir, absdir))
        o.dir = absdir;
    o.listen = meshtls_config_get(cfg, "ca_serve.listen", NULL);
    o.status = meshtls_config_get(cfg, "ca_serve.status", NULL);
    if (!o.dir) {
        usage("serve", "--dir DIR is required (the CA directory; or ca_serve.dir, "
                       "MESHTLS_CA_SERVE_DIR)");
        goto out;
    }
    if (!o.listen) {
        usage("serve", "--listen ADDR is required (e.g. 127.0.0.1:8443)");
        goto out;
    }
    if ((rc = meshtls_config_get_int(cfg, "ca_serve.workers", &v, &err)))
        goto bad;
    o.workers = (int)v;
    if ((rc = meshtls_config_get_int(cfg, "ca_serve.peer_ttl", &v, &err)))
        goto bad;
    o.peer_ttl_s = (int)(v / 1000);
    if ((rc = meshtls_config_get_int(cfg, "ca_serve.days", &v, &err)))
        goto bad;
    o.leaf_days = (int)v;
    if ((rc = meshtls_config_get_int(cfg, "ca_serve.rotate_within", &v, &err)))
        goto bad;
    o.rotate_within_days = (int)v;
    int lc = 1;
    if ((rc = meshtls_config_get_bool(cfg, "ca_serve.lifecycle", &lc, &err)) ||
        (rc = meshtls_config_get_int(cfg, "ca_serve.lifecycle_interval", &v, &err)))
        goto bad;
    o.lifecycle_ms = lc ? v : 0;
    join_list(admins_buf, sizeof(admins_buf), meshtls_config_get(cfg, "ca_serve.admin", NULL),
              admin_flags, n_admin_flags);
    join_list(sans_buf, sizeof(sans_buf), meshtls_config_get(cfg, "ca_serve.san", NULL), san_flags,
              n_san_flags);
    if (split_list(admins_buf, o.admins, &o.n_admins, CP_ADMINS_MAX) ||
        split_list(sans_buf, o.sans, &o.n_sans, CP_SANS_MAX)) {
        usage("serve", "too many administrators (32) or --san (16)");
        goto out;
    }
    for (size_t i = 0; i < o.n_admins; i++)
        if (strncmp(o.admins[i], "spiffe://", 9) != 0) {
            usage("serve", "--admin takes a SPIFFE ID (spiffe://TD/svc/NAME)");
            goto out;
        }
    if (o.leaf_days <= o.rotate_within_days) {
        usage("serve", "--days must be longer than --rotate-within, or every new "
                       "certificate would be due for rotation at once");
        goto out;
    }
    if (check_only) {
        if ((rc = cp_serve_check(&o, &err))) {
            cli_print_err("ca serve --check", &err, rc);
            ret = 1;
            goto out;
        }
        printf("ca serve: configuration OK (store %s, listen %s)\n", o.dir, o.listen);
        ret = 0;
        goto out;
    }
    if ((rc = cp_serve_run(&o, &err))) {
        cli_print_err("ca serve", &err, rc);
        ret = 1;
        goto out;
    }
    ret = 0;
    goto out;
bad:
    cli_print_err("ca serve", &err, rc);
    ret = 2;
out:
    meshtls_config_free(cfg);
    return ret;
}

int cmd_ca_token(int argc, char **argv)
{
    struct cp_serve_opts o;
    cp_serve_opts_default(&o);
    int64_t ttl_ms = 600 * 1000;
    char dirbuf[4096];
    int rc = parse_common("token", argc, argv, &o, &ttl_ms, dirbuf, sizeof(dirbuf));
    if (rc == 1) {
        fputs(TOKEN_USAGE, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (optind != argc - 1)
        return usage("token", "give exactly one SERVICE");
    const char *service = argv[optind];
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_store *st = NULL;
    struct ca_service svc = {0};
    if ((rc = ca_store_open(o.dir, 0, &st, &err)) ||
        (rc = ca_store_service_get(st, service, &svc, &err))) {
        ca_store_close(st);
        cli_print_err("ca token", &err, rc);
        return 1;
    }
    ca_service_clear(&svc);
    ca_store_close(st);
    struct mt_db *db = NULL;
    char tok[CP_TOKEN_LEN + 1];
    if ((rc = cp_db_open(o.dir, &db, &err)) ||
        (rc = cp_token_create(db, service, ttl_ms / 1000, (int64_t)time(NULL), tok, sizeof(tok),
                              &err))) {
        mt_db_close(db);
        cli_print_err("ca token", &err, rc);
        return 1;
    }
    mt_db_close(db);
    printf("%s\n", tok);
    fflush(stdout);
    OPENSSL_cleanse(tok, sizeof(tok));
    fprintf(stderr, "token for %s, valid %lld s, single use: it is shown only once\n", service,
            (long long)(ttl_ms / 1000));
    return 0;
}
