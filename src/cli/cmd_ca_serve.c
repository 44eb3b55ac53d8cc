/*
 * cmd_ca_serve.c - `meshtls ca serve` (the control plane's API) and `meshtls ca token`
 * (a one-time bootstrap token): their flags, MESHTLS_CA_SERVE_* / MESHTLS_CA_* variables
 * and the --config file's ca_serve: / ca: sections come from the key tables
 * (src/cli/keys.c) through cli_config_load(); the work is in src/ca/serve*.c.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "ca.h"
#include "cli.h"
#include "db.h"
#include "keys.h"
#include "meshtls/config.h"
#include "serve.h"
#include "store.h"

static const char SERVE_HEAD[] =
    "usage: meshtls ca serve --dir DIR --listen ADDR [--admin SPIFFE-ID]... [options]\n"
    "\n"
    "  Serve the CA's HTTPS API (docs/CONTROL-PLANE.md).  At start the CA issues the server\n"
    "  a certificate (service meshtls-ca) for localhost, 127.0.0.1, ::1, the --listen host\n"
    "  and each --san, into DIR/serve/.  Client certificates are asked for, not required:\n"
    "  each endpoint decides (public, client certificate, or --admin identity).\n";

static const char TOKEN_HEAD[] =
    "usage: meshtls ca token --dir DIR SERVICE [--ttl 10m]\n"
    "  Print a one-time bootstrap token for SERVICE (registered) on stdout, once; only its\n"
    "  hash is stored.  A service redeems it with a CSR at POST /api/v1/sign.\n";

static int usage(const char *sub, const char *msg)
{
    fprintf(stderr, "meshtls ca %s: %s\n(run 'meshtls ca %s --help')\n", sub, msg, sub);
    return 2;
}

/* Split a list (items separated by commas or, from repeated flags, newlines) (in `buf`, modified)
 * into v[0..*n) (at most cap). */
static int split_list(char *buf, const char **v, size_t *n, size_t cap)
{
    for (char *save = NULL, *t = strtok_r(buf, ",\n", &save); t; t = strtok_r(NULL, ",\n", &save)) {
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

/* The ca_serve.* keys into `o`.  @return 0, or 2 after printing what is wrong. */
static int serve_opts_from(const struct meshtls_config *cfg, struct cp_serve_opts *o)
{
    static char admins_buf[16384], sans_buf[4096], dirbuf[4096], absdir[PATH_MAX];
    if (!(o->dir =
              cli_ca_dir(cfg, "serve", "ca_serve.dir", "ca_serve.store", dirbuf, sizeof(dirbuf))))
        return 2;
    /* absolute: the CA records where it wrote each certificate, and rotates into it */
    if (realpath(o->dir, absdir))
        o->dir = absdir;
    o->listen = meshtls_config_get(cfg, "ca_serve.listen", NULL);
    o->status = meshtls_config_get(cfg, "ca_serve.status", NULL);
    if (!o->listen)
        return usage("serve", "--listen ADDR is required (e.g. 127.0.0.1:8443; or "
                              "ca_serve.listen, MESHTLS_CA_SERVE_LISTEN)");
    /* ranges were checked when each value was set (src/cli/keys.c) */
    o->workers = (int)cli_int(cfg, "ca_serve.workers", 2);
    o->peer_ttl_s = (int)(cli_int(cfg, "ca_serve.peer_ttl", 30000) / 1000);
    o->leaf_days = (int)cli_int(cfg, "ca_serve.days", CA_LEAF_DAYS_DEFAULT);
    o->rotate_within_days = (int)cli_int(cfg, "ca_serve.rotate_within", 14);
    o->lifecycle_ms = cli_bool(cfg, "ca_serve.lifecycle", 1)
                          ? cli_int(cfg, "ca_serve.lifecycle_interval", 86400000)
                          : 0;
    const char *admins = meshtls_config_get(cfg, "ca_serve.admin", NULL);
    const char *sans = meshtls_config_get(cfg, "ca_serve.san", NULL);
    snprintf(admins_buf, sizeof(admins_buf), "%s", admins ? admins : "");
    snprintf(sans_buf, sizeof(sans_buf), "%s", sans ? sans : "");
    if (split_list(admins_buf, o->admins, &o->n_admins, CP_ADMINS_MAX) ||
        split_list(sans_buf, o->sans, &o->n_sans, CP_SANS_MAX))
        return usage("serve", "too many administrators (32) or --san (16)");
    for (size_t i = 0; i < o->n_admins; i++)
        if (strncmp(o->admins[i], "spiffe://", 9) != 0)
            return usage("serve", "--admin takes a SPIFFE ID (spiffe://TD/svc/NAME)");
    if (o->leaf_days <= o->rotate_within_days)
        return usage("serve", "--days must be longer than --rotate-within, or every new "
                              "certificate would be due for rotation at once");
    return 0;
}

int cmd_ca_serve(int argc, char **argv)
{
    struct cp_serve_opts o;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc, check = 0, ret;
    const struct meshtls_config_opt own[] = {{"--check", 0, NULL, &check}};
    struct cli_cmd c = {.what = "ca serve",
                        .tables = CLI_TABLE_CA,
                        .role = "ca_serve",
                        .modes = CA_KEY_SERVE,
                        .opts = own,
                        .nopts = 1};
    cp_serve_opts_default(&o);
    /* flags > MESHTLS_CA_SERVE_* > the file's ca_serve: section > defaults */
    ret = cli_config_load(&c, argc - 1, argv + 1);
    cli_hide_passwords(argc - 1, argv + 1);
    if (ret == 0 && c.help)
        cli_usage(stdout, &c, SERVE_HEAD,
                  "  --check                        validate (store, CA files and the\n"
                  "                                 intermediate's key, addresses, options),\n"
                  "                                 bind nothing: exit 0, or 1 naming the\n"
                  "                                 problem (2: a configuration error)\n");
    if (ret || c.help)
        goto out;
    if ((ret = serve_opts_from(c.cfg, &o)) != 0)
        goto out;
    if (check) {
        if ((rc = cp_serve_check(&o, &err))) {
            cli_print_err("ca serve --check", &err, rc);
            ret = 1;
            goto out;
        }
        printf("ca serve: configuration OK (store %s, listen %s)\n", o.dir, o.listen);
        goto out;
    }
    if ((rc = cp_serve_run(&o, &err))) {
        cli_print_err("ca serve", &err, rc);
        ret = 1;
    }
out:
    meshtls_config_free(c.cfg);
    return ret;
}

/* Create and print a token for `service` of the CA in `dir`.  @return the exit status. */
static int token_run(const char *dir, const char *service, int64_t ttl_ms)
{
    int rc;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct ca_store *st = NULL;
    struct ca_service svc = {0};
    if ((rc = ca_store_open(dir, 0, &st, &err)) ||
        (rc = ca_store_service_get(st, service, &svc, &err))) {
        ca_store_close(st);
        cli_print_err("ca token", &err, rc);
        return 1;
    }
    ca_service_clear(&svc);
    ca_store_close(st);
    struct mt_db *db = NULL;
    char tok[CP_TOKEN_LEN + 1];
    if ((rc = cp_db_open(dir, &db, &err)) ||
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

int cmd_ca_token(int argc, char **argv)
{
    const char *service = NULL;
    char dirbuf[4096];
    struct cli_cmd c = {.what = "ca token",
                        .tables = CLI_TABLE_CA,
                        .role = "ca",
                        .modes = CA_KEY_TOKEN,
                        .pos = &service,
                        .maxpos = 1};
    int rc = cli_config_load(&c, argc - 1, argv + 1);
    cli_hide_passwords(argc - 1, argv + 1);
    if (rc == 0 && c.help)
        cli_usage(stdout, &c, TOKEN_HEAD, NULL);
    if (rc || c.help) {
        meshtls_config_free(c.cfg);
        return rc;
    }
    const char *dir = cli_ca_dir(c.cfg, "token", "ca.dir", "ca.store", dirbuf, sizeof(dirbuf));
    int64_t ttl_ms = cli_int(c.cfg, "ca.token_ttl", 600000);
    rc = !dir       ? 2
         : !service ? usage("token", "give exactly one SERVICE")
                    : token_run(dir, service, ttl_ms);
    meshtls_config_free(c.cfg);
    return rc;
}
