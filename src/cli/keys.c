/*
 * keys.c - the `ca.*`, `ca_serve.*`, `connect.*`, `cert.*` and `dev.*` configuration keys
 * (docs/CONFIG.md, docs/PKI.md, docs/CONTROL-PLANE.md, docs/ROUTER.md), and the one path
 * from a command line, the environment and --config FILE to a configuration that every
 * command of src/cli takes (cli_config_load).
 *
 * Each row is a flag, a MESHTLS_<SECTION>_<KEY> variable and a key of the YAML file's
 * section, with its type, range, default and help; the commands read values only through
 * the typed getters, so no command parses a number.  A row marked ARG is an argument of one
 * invocation (--serial, --json, --force): its flag alone sets it, so a variable left in a
 * shell cannot turn every `ca rotate` into a forced one.
 *
 * To add a key: a row here, the code that applies it in its command, a row in the tables of
 * tests/integration/test_cli_config.py, then regenerate docs/CONFIG.md's reference.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>

#include "ca.h"
#include "db.h"
#include "cli.h"
#include "keys.h"
#include "proxy.h"
#include "router.h"
#include "store.h"

#define P MESHTLS_CFG_PATH
#define S MESHTLS_CFG_STR
#define B MESHTLS_CFG_BOOL
#define I MESHTLS_CFG_INT
#define E MESHTLS_CFG_ENUM
#define D MESHTLS_CFG_DURATION
#define ARG MESHTLS_KEY_ARG
#define REP MESHTLS_KEY_REPEAT
#define DAY 86400000L

#define INIT CA_KEY_INIT
#define REG CA_KEY_REGISTER
#define ISS CA_KEY_ISSUE
#define ROT CA_KEY_ROTATE
#define REV CA_KEY_REVOKE
#define CRL CA_KEY_CRL
#define LST CA_KEY_LIST
#define SVC CA_KEY_SERVICES
#define UNR CA_KEY_UNREGISTER
#define RNW CA_KEY_RENEW
#define RCR CA_KEY_ROOT_CRL
#define TOK CA_KEY_TOKEN

const char *const cli_mode_names[32] = {"proxy server",
                                        "proxy client",
                                        "init",
                                        "register",
                                        "issue",
                                        "rotate",
                                        "revoke",
                                        "crl",
                                        "list",
                                        "services",
                                        "unregister",
                                        "renew-intermediate",
                                        "root-crl",
                                        "token",
                                        "",
                                        "serve",
                                        "proxy router",
                                        "router",
                                        "connect",
                                        "inspect",
                                        "check",
                                        "verify",
                                        "dev",
                                        "",
                                        "",
                                        "",
                                        "",
                                        "",
                                        "",
                                        "",
                                        "",
                                        "library"};

/* name, type, default, alias, flag, flag_sets, choices, min, max, help,
 * modes, metavar, --help group, opts */
static const struct meshtls_config_keydef ca_keys[] = {
    /* where the CA is */
    {"ca.dir", P, NULL, NULL, "--dir", NULL, NULL, 0, 0,
     "the CA directory (keys, and meshtls.db or store.url); required but with list --store",
     CA_KEY_OFFLINE | TOK, "DIR", "the CA", 0},
    {"ca.store", S, NULL, NULL, "--store", NULL, NULL, 0, 0,
     "where the CA's data is: postgres://... (beside --dir DIR, which keeps the key files) or "
     "sqlite:PATH; list takes it alone",
     CA_KEY_OFFLINE | TOK, "URL", "the CA", MESHTLS_KEY_URL},
    /* init */
    {"ca.trust_domain", S, NULL, NULL, "--trust-domain", NULL, NULL, 0, 0,
     "the trust domain of every SPIFFE ID the CA issues (e.g. example.org); required", INIT, "TD",
     "init", ARG},
    {"ca.key_type", E, "ec-p256", NULL, "--key-type", NULL, "ec-p256|ec-p384|rsa-2048|ed25519", 0,
     0, "key type of the CA keys", INIT, NULL, "init", 0},
    {"ca.crl_out", P, NULL, NULL, "--crl-out", NULL, NULL, 0, 0,
     "publish the CRL there now and after every revoke", INIT, NULL, "init", ARG},
    /* register */
    {"ca.dns", S, NULL, NULL, "--dns", NULL, NULL, 0, 0, "a DNS SAN of the service", REG, "NAME",
     "register", ARG | REP},
    {"ca.ip", S, NULL, NULL, "--ip", NULL, NULL, 0, 0, "an IP SAN of the service", REG, "ADDR",
     "register", ARG | REP},
    {"ca.spiffe_id", S, NULL, NULL, "--spiffe-id", NULL, NULL, 0, 0,
     "the service's SPIFFE ID (default spiffe://TD/svc/SERVICE)", REG, "URI", "register", ARG},
    /* issue, rotate */
    {"ca.out", P, NULL, NULL, "--out", NULL, NULL, 0, 0,
     "issue: the directory for SERVICE.crt, SERVICE.key, ca.crt (required); crl: the CRL file "
     "(remembered)",
     ISS | CRL, "OUT", "issue", ARG},
    {"ca.days", I, "90", NULL, "--days", NULL, NULL, 1, CA_LEAF_DAYS_MAX,
     "validity of the certificates issued and rotated", ISS | ROT, "N", "issue", 0},
    {"ca.csr", P, NULL, NULL, "--csr", NULL, NULL, 0, 0,
     "sign this CSR (the service keeps its key; none is written)", ISS, NULL, "issue", ARG},
    {"ca.within_days", I, "14", NULL, "--within-days", NULL, NULL, 0, 3650,
     "rotate the certificates expiring within this many days", ROT, "N", "rotate", 0},
    {"ca.force", B, "false", NULL, "--force", "true", NULL, 0, 0,
     "rotate every active certificate now", ROT, NULL, "rotate", ARG},
    /* revoke, unregister */
    {"ca.serial", S, NULL, NULL, "--serial", NULL, NULL, 0, 0,
     "the certificate to revoke (hex), instead of every one of SERVICE", REV, "HEX", "revoke", ARG},
    {"ca.reason", S, NULL, NULL, "--reason", NULL, NULL, 0, 0,
     "unspecified keyCompromise caCompromise affiliationChanged superseded cessationOfOperation",
     REV | RCR, "R", "revoke", ARG},
    {"ca.replace", B, "false", NULL, "--replace", "true", NULL, 0, 0,
     "issue the replacement in the same transaction", REV, NULL, "revoke", ARG},
    {"ca.revoke", B, "false", NULL, "--revoke", "true", NULL, 0, 0,
     "unregister: revoke the service's valid certificates (cessationOfOperation)", UNR, NULL,
     "revoke", ARG},
    /* list, services */
    {"ca.json", B, "false", NULL, "--json", "true", NULL, 0, 0, "print JSON", LST | SVC, NULL,
     "list", ARG},
    {"ca.service", S, NULL, NULL, "--service", NULL, NULL, 0, 0, "only this service", LST, "S",
     "list", ARG},
    {"ca.status", E, NULL, NULL, "--status", NULL, "active|superseded|revoked|expired", 0, 0,
     "only certificates in this state", LST, NULL, "list", ARG},
    {"ca.expiring_within", I, NULL, NULL, "--expiring-within", NULL, NULL, 0, 3650,
     "only certificates expiring within this many days", LST, "DAYS", "list", ARG},
    /* the offline root's duties */
    {"ca.root_key", P, NULL, NULL, "--root-key", NULL, NULL, 0, 0,
     "the root key brought back for the ceremony; required", RNW | RCR, NULL, "ceremony", ARG},
    {"ca.ca_days", I, NULL, NULL, "--days", NULL, NULL, 1, CA_ROOT_DAYS,
     "validity of the renewed intermediate (1825) or of the root's CRL (365)", RNW | RCR, "N",
     "ceremony", ARG},
    {"ca.new_key", B, "false", NULL, "--new-key", "true", NULL, 0, 0,
     "give the intermediate a new key (the old one stays valid until its end)", RNW, NULL,
     "ceremony", ARG},
    {"ca.revoke_intermediate", S, NULL, NULL, "--revoke-intermediate", NULL, NULL, 0, 0,
     "revoke this intermediate (serial, hex) in the root's CRL", RCR, "SERIAL", "ceremony", ARG},
    /* token */
    {"ca.token_ttl", D, "10m", NULL, "--ttl", NULL, NULL, 1000, 366 * DAY,
     "how long a bootstrap token may be redeemed", TOK, NULL, "token", 0},
};

#define SRV CA_KEY_SERVE
static const struct meshtls_config_keydef ca_serve_keys[] = {
    {"ca_serve.dir", P, NULL, NULL, "--dir", NULL, NULL, 0, 0,
     "the CA directory (keys and meshtls.db); required", SRV, "DIR", "ca serve", 0},
    {"ca_serve.store", S, NULL, NULL, "--store", NULL, NULL, 0, 0,
     "where the CA's data is: postgres://... shared by several servers (beside --dir DIR, "
     "which keeps the key files), or sqlite:DIR/meshtls.db",
     SRV, "URL", "ca serve", MESHTLS_KEY_URL},
    {"ca_serve.listen", S, NULL, NULL, "--listen", NULL, NULL, 0, 0,
     "address of the HTTPS API (host:port, [v6]:port, :port); required", SRV, "ADDR", "ca serve",
     0},
    {"ca_serve.status", S, NULL, NULL, "--status", NULL, NULL, 0, 0,
     "address of plain-HTTP /healthz, /readyz, /metrics and OCSP", SRV, "ADDR", "ca serve", 0},
    {"ca_serve.admin", S, NULL, NULL, "--admin", NULL, NULL, 0, 0,
     "SPIFFE ID that may call /api/admin/... (a file or variable: comma-separated; flags "
     "replace it)",
     SRV, "SPIFFE-ID", "ca serve", REP},
    {"ca_serve.san", S, NULL, NULL, "--san", NULL, NULL, 0, 0,
     "another DNS name or IP of the server certificate (a file or variable: comma-separated)", SRV,
     "NAME|IP", "ca serve", REP},
    {"ca_serve.workers", I, "2", NULL, "--workers", NULL, NULL, 1, 64, "event-loop threads", SRV,
     NULL, "ca serve", 0},
    {"ca_serve.peer_ttl", D, "30s", NULL, "--peer-ttl", NULL, NULL, 1000, 366 * DAY,
     "an /api/peers registration lives this long without a heartbeat", SRV, NULL, "ca serve", 0},
    {"ca_serve.days", I, "90", NULL, "--days", NULL, NULL, 1, CA_LEAF_DAYS_MAX,
     "validity of certificates issued through the API and rotations", SRV, "N", "ca serve", 0},
    {"ca_serve.lifecycle", B, "true", NULL, NULL, NULL, NULL, 0, 0,
     "run the lifecycle worker (--lifecycle-interval off also stops it)", SRV, NULL, "ca serve", 0},
    {"ca_serve.lifecycle_interval", D, "24h", NULL, "--lifecycle-interval", NULL, NULL, 0,
     366 * DAY, "how often the lifecycle worker runs (off: never)", SRV, NULL, "ca serve", 0},
    {"ca_serve.rotate_within", I, "14", NULL, "--rotate-within", NULL, NULL, 0, 824,
     "the worker rotates certificates expiring within this many days", SRV, "N", "ca serve", 0},
};

#define CON CLI_KEY_CONNECT
static const struct meshtls_config_keydef connect_keys[] = {
    {"connect.proxy", S, NULL, NULL, "--proxy", NULL, NULL, 0, 0, "the router, HOST:PORT; required",
     CON, "HOST:PORT", "connect", 0},
    {"connect.cert", P, NULL, NULL, "--cert", NULL, NULL, 0, 0,
     "the user certificate chain (PEM); required", CON, NULL, "connect", 0},
    {"connect.key", P, NULL, NULL, "--key", NULL, NULL, 0, 0,
     "its private key (PEM, mode 0600); required", CON, NULL, "connect", 0},
    {"connect.cacert", P, NULL, NULL, "--cacert", NULL, NULL, 0, 0,
     "CA bundle that verifies the router; required", CON, NULL, "connect", 0},
    {"connect.connect_id", S, NULL, NULL, "--connect-id", NULL, NULL, 0, 0,
     "the host to reach (ssh: %h); required but with --ssh-config", CON, "ID", "connect", ARG},
    {"connect.server_name", S, NULL, NULL, "--server-name", NULL, NULL, 0, 0,
     "the name the router's certificate must carry (default: the host of --proxy)", CON, "NAME",
     "connect", 0},
    {"connect.server_spiffe_id", MESHTLS_CFG_SPIFFE_ID, NULL, NULL, "--server-spiffe-id", NULL,
     NULL, 0, 0, "the SPIFFE ID the router must present", CON, NULL, "connect", 0},
    {"connect.server_trust_domain", MESHTLS_CFG_TRUST_DOMAIN, NULL, NULL, "--server-trust-domain",
     NULL, NULL, 0, 0, "the trust domain of the router's SPIFFE ID", CON, NULL, "connect", 0},
    {"connect.timeout", D, "15s", NULL, "--timeout", NULL, NULL, 1, 3600000,
     "to connect, shake hands and hear the answer", CON, NULL, "connect", 0},
    {"connect.ssh_config", B, "false", NULL, "--ssh-config", "true", NULL, 0, 0,
     "print a ~/.ssh/config block instead of connecting", CON, NULL, "connect", ARG},
    {"connect.host", S, NULL, NULL, "--host", NULL, NULL, 0, 0,
     "the Host pattern of --ssh-config's block (default *)", CON, "PATTERN", "connect", ARG},
};

static const struct meshtls_config_keydef cert_keys[] = {
    {"cert.json", B, "false", NULL, "--json", "true", NULL, 0, 0, "print JSON", CLI_KEY_INSPECT,
     NULL, "cert", ARG},
    {"cert.min_days", I, NULL, NULL, "--min-days", NULL, NULL, 0, 100000,
     "days the certificate (or each CRL) must still be valid; required", CLI_KEY_CHECK, "N", "cert",
     0},
    {"cert.ca", P, NULL, NULL, "--ca", NULL, NULL, 0, 0, "the CA bundle (PEM); required",
     CLI_KEY_VERIFY, NULL, "cert", 0},
    {"cert.crl", P, NULL, NULL, "--crl", NULL, NULL, 0, 0, "CRLs (PEM) to check the chain against",
     CLI_KEY_VERIFY, NULL, "cert", 0},
    {"cert.purpose", E, NULL, NULL, "--purpose", NULL, "client|server", 0, 0,
     "also check the leaf may act as a TLS client or server", CLI_KEY_VERIFY, NULL, "cert", 0},
};

static const struct meshtls_config_keydef dev_keys[] = {
    {"dev.out", P, NULL, NULL, "--out", NULL, NULL, 0, 0,
     "the directory of the certificates (the CA goes to DIR/ca); required", CLI_KEY_DEV, "DIR",
     "dev", 0},
};

static const struct meshtls_config_flag_alias cert_aliases[] = {{"--cacert", "cert.ca"}};

#define N(t) (sizeof(t) / sizeof((t)[0]))

int cli_config_register(struct meshtls_config *cfg, unsigned tables, struct meshtls_err *err)
{
    int rc = 0;
    if ((tables & CLI_TABLE_PROXY) && (rc = px_config_register(cfg, err)))
        return rc;
    if ((tables & CLI_TABLE_ROUTER) && (rc = rt_config_register(cfg, err)))
        return rc;
    if ((tables & CLI_TABLE_CA) &&
        ((rc = meshtls_config_add_keys(cfg, ca_keys, N(ca_keys), err)) ||
         (rc = meshtls_config_add_keys(cfg, ca_serve_keys, N(ca_serve_keys), err))))
        return rc;
    if ((tables & CLI_TABLE_CONNECT) &&
        (rc = meshtls_config_add_keys(cfg, connect_keys, N(connect_keys), err)))
        return rc;
    if ((tables & CLI_TABLE_CERT) &&
        ((rc = meshtls_config_add_keys(cfg, cert_keys, N(cert_keys), err)) ||
         (rc = meshtls_config_add_flag_aliases(cfg, cert_aliases, N(cert_aliases), err))))
        return rc;
    if ((tables & CLI_TABLE_DEV) && (rc = meshtls_config_add_keys(cfg, dev_keys, N(dev_keys), err)))
        return rc;
    return 0;
}

int cli_config_load(struct cli_cmd *c, int argc, char **argv)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_config_opt opts[8];
    size_t n = 0;
    int rc;
    c->cfg = NULL;
    c->help = 0;
    c->npos = 0;
    c->config_file = NULL;
    opts[n++] = (struct meshtls_config_opt){"--config", 1, &c->config_file, NULL};
    opts[n++] = (struct meshtls_config_opt){"--help", 0, NULL, &c->help};
    for (size_t i = 0; i < c->nopts && n < N(opts); i++)
        opts[n++] = c->opts[i];
    if (meshtls_config_new(&c->cfg) != 0 || (rc = cli_config_register(c->cfg, c->tables, &err))) {
        fprintf(stderr, "meshtls %s: out of memory\n", c->what);
        return 1;
    }
    /* -h as every command always took it */
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h"))
            c->help = 1;
    if (c->help)
        return 0;
    if ((rc = meshtls_config_parse_cmdline(c->cfg, argc, argv, c->role, c->modes, opts, n, c->pos,
                                           c->maxpos, &c->npos, &err))) {
        cli_print_err(c->what, &err, rc);
        fprintf(stderr, "Try 'meshtls %s --help'.\n", c->what);
        return 2;
    }
    if (c->help)
        return 0;
    if ((c->config_file && (rc = meshtls_config_load_file(c->cfg, c->config_file, &err))) ||
        (rc = meshtls_config_load_env(c->cfg, NULL, &err)) ||
        (rc = meshtls_config_apply_log(c->cfg, &err))) {
        cli_print_err(c->what, &err, rc);
        return 2;
    }
    return 0;
}

const char *cli_need(const struct cli_cmd *c, const char *key)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *v = NULL;
    int rc = meshtls_config_need(c->cfg, key, &v, &err);
    if (rc) {
        cli_print_err(c->what, &err, rc);
        return NULL;
    }
    return v;
}

long cli_int(const struct meshtls_config *cfg, const char *key, long dflt)
{
    long v;
    return meshtls_config_get_int(cfg, key, &v, NULL) == 0 ? v : dflt;
}

int cli_bool(const struct meshtls_config *cfg, const char *key, int dflt)
{
    int v;
    return meshtls_config_get_bool(cfg, key, &v, NULL) == 0 ? v : dflt;
}

void cli_usage(FILE *f, const struct cli_cmd *c, const char *head, const char *extra)
{
    fputs(head, f);
    fputc('\n', f);
    if (c->cfg)
        meshtls_config_print_flags(c->cfg, f, c->role, c->modes, cli_mode_names, N(cli_mode_names));
    fprintf(f,
            "command:\n"
            "  --config FILE                  YAML file: the keys above under their section\n"
            "%s"
            "  --help                         this text\n"
            "\n"
            "Every flag but an argument of one invocation is also a key: MESHTLS_<SECTION>_<KEY>\n"
            "in the environment and KEY under its section of --config; flags beat the\n"
            "environment, which beats the file. `meshtls config --keys` lists them all\n"
            "(docs/CONFIG.md).\n",
            extra ? extra : "");
}

/*
 * Overwrite the passwords of argv[0..argc) in place, so that `ps` and /proc/PID/cmdline
 * stop showing them: a --store URL's password and --db-password's value (both were copied
 * into the configuration already).
 */
void cli_hide_passwords(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        char *a = argv[i], *v = NULL;
        int store = !strncmp(a, "--store", 7) && (a[7] == '=' || !a[7]);
        int pw = !strncmp(a, "--db-password", 13) && (a[13] == '=' || !a[13]);
        if (!store && !pw)
            continue;
        if (strchr(a, '='))
            v = strchr(a, '=') + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        if (v && store)
            mt_db_url_hide_password(v);
        else if (v)
            memset(v, '*', strlen(v));
    }
}

void cli_usage_of(FILE *f, unsigned tables, const char *role, unsigned modes, const char *head)
{
    struct cli_cmd c = {.what = role, .tables = tables, .role = role, .modes = modes};
    if (meshtls_config_new(&c.cfg) == 0 && cli_config_register(c.cfg, tables, NULL) != 0) {
        meshtls_config_free(c.cfg); /* a broken table: print the head alone */
        c.cfg = NULL;
    }
    cli_usage(f, &c, head, NULL);
    meshtls_config_free(c.cfg);
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

const char *cli_ca_dir(const struct meshtls_config *cfg, const char *sub, const char *dir_key,
                       const char *store_key, char *dirbuf, size_t cap)
{
    return cli_ca_resolve(sub, meshtls_config_get(cfg, dir_key, NULL),
                          meshtls_config_get(cfg, store_key, NULL), dir_key, dirbuf, cap);
}

const char *cli_ca_resolve(const char *sub, const char *dir, const char *store, const char *dir_key,
                           char *dirbuf, size_t cap)
{
    const char *env = !strcmp(dir_key, "ca.dir") ? "MESHTLS_CA_DIR" : "MESHTLS_CA_SERVE_DIR";
    if (store && dir) {
        /* the keys in DIR, the data at the URL: what DIR/store.url says, for this process */
        char abs[PATH_MAX];
        struct meshtls_err err = MESHTLS_ERR_INIT;
        if (!realpath(dir, abs)) {
            fprintf(stderr,
                    "meshtls ca %s: --dir %s: %s (the CA directory with the key files; create "
                    "it with 'meshtls ca init')\n",
                    sub, dir, strerror(errno));
            return NULL;
        }
        if (ca_store_use(abs, store, &err) != 0) {
            fprintf(stderr, "meshtls ca %s: --store: %s\n", sub, err.msg);
            return NULL;
        }
        return dir;
    }
    if (store) {
        if (store_dir(store, dirbuf, cap) == 0)
            return dirbuf; /* sqlite:DIR/meshtls.db: the directory is known */
        fprintf(stderr,
                "meshtls ca %s: --store names where the CA's data is; its key files are in a "
                "directory: give --dir DIR beside it (or put the URL in DIR/store.url and give "
                "--dir alone; see docs/CONTROL-PLANE.md)\n(run 'meshtls ca %s --help')\n",
                sub, sub);
        return NULL;
    }
    if (!dir)
        fprintf(stderr,
                "meshtls ca %s: --dir DIR is required (the CA directory; or %s, %s)\n(run "
                "'meshtls ca %s --help')\n",
                sub, dir_key, env, sub);
    return dir;
}
