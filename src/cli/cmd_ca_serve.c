/*
 * cmd_ca_serve.c - `meshtls ca serve` (the control plane's API) and `meshtls ca token`
 * (a one-time bootstrap token): argument parsing only; the work is in src/ca/serve*.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "ca.h"
#include "cli.h"
#include "db.h"
#include "parse.h"
#include "serve.h"
#include "store.h"

static const char SERVE_USAGE[] =
    "usage: meshtls ca serve --dir DIR --listen ADDR [--admin SPIFFE-ID]... [--status ADDR]\n"
    "                        [--san NAME|IP]... [--workers N] [--peer-ttl 30s] [--days 90]\n"
    "                        [--lifecycle-interval 24h|off] [--rotate-within 14] [--check]\n"
    "  Serve the CA's HTTPS API (docs/CONTROL-PLANE.md).  At start the CA issues the server\n"
    "  a certificate (service meshtls-ca) for localhost, 127.0.0.1, ::1, the --listen host\n"
    "  and each --san, into DIR/serve/.  Client certificates are asked for, not required:\n"
    "  each endpoint decides (public, client certificate, or --admin identity).\n"
    "  --store sqlite:DIR/meshtls.db is accepted as another way to name DIR.\n"
    "  --check validates (store, CA files and key, addresses, options) and exits.\n";

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

int cmd_ca_serve(int argc, char **argv)
{
    struct cp_serve_opts o;
    cp_serve_opts_default(&o);
    int64_t ttl_ms = 0;
    char dirbuf[4096];
    int rc = parse_common("serve", argc, argv, &o, &ttl_ms, dirbuf, sizeof(dirbuf));
    if (rc == 1) {
        fputs(SERVE_USAGE, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (optind != argc)
        return usage("serve", "unexpected argument");
    if (!o.listen)
        return usage("serve", "--listen ADDR is required (e.g. 127.0.0.1:8443)");
    if (ttl_ms)
        o.peer_ttl_s = (int)(ttl_ms / 1000);
    if (o.leaf_days <= o.rotate_within_days)
        return usage("serve", "--days must be longer than --rotate-within, or every new "
                              "certificate would be due for rotation at once");
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (check_only) {
        if ((rc = cp_serve_check(&o, &err))) {
            cli_print_err("ca serve --check", &err, rc);
            return 1;
        }
        printf("ca serve: configuration OK (store %s, listen %s)\n", o.dir, o.listen);
        return 0;
    }
    if ((rc = cp_serve_run(&o, &err))) {
        cli_print_err("ca serve", &err, rc);
        return 1;
    }
    return 0;
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
