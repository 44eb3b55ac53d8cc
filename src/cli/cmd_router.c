/*
 * cmd_router.c - `meshtls proxy router` (the mTLS bastion of docs/ROUTER.md): its flags,
 * including 004's names (--server-cert, --ca-certs, --db-host, ...), into a struct
 * rt_config for rt_run().
 *
 * Passwords: a --store URL's password and --db-password are copied, then overwritten in
 * argv so that `ps` and /proc/PID/cmdline stop showing them; --db-password reaches libpq
 * through PGPASSWORD (this process's environment only), never through a URL that a
 * message could print.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "db.h"
#include "meshtls/config.h"
#include "meshtls/log.h"
#include "parse.h"
#include "router.h"

#define RT_MAX_CA 8

static void router_usage(FILE *f)
{
    fprintf(f,
            "usage: meshtls proxy router --listen ADDR --cert FILE --key FILE\n"
            "                            --cacert FILE[,FILE...] --issuer DOMAIN\n"
            "                            --store sqlite:PATH|postgres://... [options]\n"
            "\n"
            "The mTLS router (bastion): clients present a user certificate\n"
            "spiffe://DOMAIN/orgs/<org>/users/<user>, send '<connect_id>\\n', and are relayed to\n"
            "backend_hosts.internal_ip_addr (default port %d) when 004's rule allows, with\n"
            "'OK\\n'; otherwise 'ERROR: <code> <message>\\n' (docs/ROUTER.md).\n"
            "\n"
            "  --listen ADDR            host:port to accept mTLS on\n"
            "  --cert, --server-cert F  our certificate chain (PEM)\n"
            "  --key, --server-key F    our private key (PEM, mode 0600)\n"
            "  --cacert, --ca-certs F,F CA bundles trusted for client certificates (several at\n"
            "                           once for CA rotation; repeatable)\n"
            "  --crl FILE               CRLs (PEM): revoked client certificates are refused\n"
            "  --issuer DOMAIN          the trust domain of user SPIFFE IDs\n"
            "  --store URL              sqlite:PATH or postgres://USER@HOST[:PORT]/DB (a password\n"
            "                           is better in PGPASSWORD or ~/.pgpass)\n"
            "  --db-host H --db-port P --db-user U --db-name D --db-password PW\n"
            "                           004's PostgreSQL flags (instead of --store)\n"
            "  --status ADDR            plain HTTP /healthz, /readyz, /metrics (loopback)\n"
            "  --log-level L            debug|info|warn|error\n"
            "  --log-format text|json\n"
            "  --workers N              event-loop threads (default: CPUs)\n"
            "  --job-threads N          database threads (default 4)\n"
            "  --line-timeout D         time for the connect-id line (default 5s)\n"
            "  --authz-timeout D        time for the decision (default 3s)\n"
            "  --connect-timeout D      time to connect to the host (default 5s)\n"
            "  --idle-timeout D         relay idle time (default 1h)\n"
            "  --handshake-timeout D    TLS handshake (default 10s)\n"
            "  --max-conns N            simultaneous connections (default 10000)\n"
            "  --no-connection-log      do not write router_connections\n"
            "  --cache-ttl D            answer repeated decisions from memory this long (500ms;\n"
            "                           a removed grant refuses new connects after it; 0: off)\n"
            "  --stale-max D            with the database down, cached decisions answer this\n"
            "                           long, then authz-unavailable (30s; 0: fail at once)\n"
            "  --recheck-interval D     check live relays' grants this often; a removed grant\n"
            "                           closes the relay (1s; 0: off)\n"
            "  --user-rate N, --org-rate N   connection attempts per minute (120, 6000; 0: off)\n"
            "  --user-sessions N, --org-sessions N   open sessions at once (50, 2000; 0: off)\n"
            "  --check                  validate everything (files, database) and exit\n",
            RT_DEFAULT_PORT);
}

/* Flags that set a `router.*` key (src/proxy/router_config_keys.c); 004's names are
 * aliases.  The others are handled here. */
struct rflag {
    const char *name;
    const char *key; /* NULL: special */
};

static const struct rflag rflags[] = {
    {"listen", "router.listen"},
    {"cert", "router.cert"},
    {"server-cert", "router.cert"},
    {"key", "router.key"},
    {"server-key", "router.key"},
    {"crl", "router.crl"},
    {"issuer", "router.issuer"},
    {"status", "router.status"},
    {"workers", "router.workers"},
    {"job-threads", "router.job_threads"},
    {"max-conns", "router.max_conns"},
    {"handshake-timeout", "router.handshake_timeout"},
    {"line-timeout", "router.line_timeout"},
    {"authz-timeout", "router.authz_timeout"},
    {"connect-timeout", "router.connect_timeout"},
    {"idle-timeout", "router.idle_timeout"},
    {"cache-ttl", "router.cache_ttl"},
    {"stale-max", "router.stale_max"},
    {"recheck-interval", "router.recheck_interval"},
    {"user-rate", "router.user_rate"},
    {"org-rate", "router.org_rate"},
    {"user-sessions", "router.user_sessions"},
    {"org-sessions", "router.org_sessions"},
};
#define N_RFLAGS (sizeof(rflags) / sizeof(rflags[0]))

enum {
    O_KEYED = 1, /* + index into rflags */
    O_CACERT = 100,
    O_STORE,
    O_DBHOST,
    O_DBPORT,
    O_DBUSER,
    O_DBNAME,
    O_DBPASS,
    O_LOGLEVEL,
    O_LOGFMT,
    O_CONFIG,
    O_NOLOG,
    O_CHECK,
    O_HELP,
};

static int bad(const char *flag, const char *val, const char *want)
{
    fprintf(stderr, "meshtls proxy router: %s '%s': %s\n", flag, val, want);
    return 2;
}

/* Percent-encode `s` for a URL component (RFC 3986 unreserved kept). */
static int url_part(char *out, size_t cap, size_t *at, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || strchr("-._~", ch);
        if (*at + 4 >= cap)
            return -1;
        if (keep) {
            out[(*at)++] = (char)ch;
        } else {
            out[(*at)++] = '%';
            out[(*at)++] = hex[ch >> 4];
            out[(*at)++] = hex[ch & 15];
        }
    }
    out[*at] = '\0';
    return 0;
}

/* postgres://[USER@][HOST][:PORT]/[DB] from 004's flags (the password goes by PGPASSWORD). */
static int build_pg_url(char *out, size_t cap, const char *host, const char *port, const char *user,
                        const char *name)
{
    size_t at = 0;
    int w = snprintf(out, cap, "postgres://");
    if (w < 0 || (size_t)w >= cap)
        return -1;
    at = (size_t)w;
    if (user && (url_part(out, cap, &at, user) != 0 || at + 1 >= cap))
        return -1;
    if (user)
        out[at++] = '@';
    if (host && url_part(out, cap, &at, host) != 0)
        return -1;
    if (port) {
        int p = 0;
        if (mt_parse_int(port, 1, 65535, &p) != 0)
            return -2;
        w = snprintf(out + at, cap - at, ":%d", p);
        if (w < 0 || (size_t)w >= cap - at)
            return -1;
        at += (size_t)w;
    }
    if (at + 1 >= cap)
        return -1;
    out[at++] = '/';
    out[at] = '\0';
    if (name && url_part(out, cap, &at, name) != 0)
        return -1;
    return 0;
}

/* One flag's value for a key (applied after the file and the environment). */
struct kv {
    const char *key, *val, *flag;
};

/* A duration key into milliseconds (the configuration checked its range already). */
static int dur_key(const struct meshtls_config *cfg, const char *key, int *out)
{
    const char *v = meshtls_config_get(cfg, key, NULL);
    int64_t ms = 0;
    if (!v)
        return 0;
    if (mt_parse_duration_ms(v, 7 * 86400000LL, &ms) != 0) {
        fprintf(stderr, "meshtls proxy router: %s '%s': expected a duration\n", key, v);
        return 2;
    }
    *out = (int)ms;
    return 0;
}

static int int_key(const struct meshtls_config *cfg, const char *key, int *out)
{
    long v = 0;
    if (meshtls_config_get_int(cfg, key, &v, NULL) == 0)
        *out = (int)v;
    return 0;
}

int cmd_proxy_router(int argc, char **argv)
{
    struct rt_config c = {0};
    const char *ca_files[RT_MAX_CA];
    size_t n_ca = 0;
    char *store = NULL, *dbpass = NULL, *cacerts = NULL, *ca_copy = NULL;
    const char *dbhost = NULL, *dbport = NULL, *dbuser = NULL, *dbname = NULL;
    const char *config_file = NULL;
    int check = 0, status = 2, opt, rc;
    char pgurl[1024];
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_config *cfg = NULL;
    struct kv set[64];
    size_t nset = 0;
    struct option lo[N_RFLAGS + 16];
    size_t nlo = 0;
    for (size_t i = 0; i < N_RFLAGS; i++)
        lo[nlo++] = (struct option){rflags[i].name, 1, 0, O_KEYED + (int)i};
    static const struct option special[] = {
        {"cacert", 1, 0, O_CACERT},      {"ca-certs", 1, 0, O_CACERT},
        {"store", 1, 0, O_STORE},        {"db-host", 1, 0, O_DBHOST},
        {"db-port", 1, 0, O_DBPORT},     {"db-user", 1, 0, O_DBUSER},
        {"db-name", 1, 0, O_DBNAME},     {"db-password", 1, 0, O_DBPASS},
        {"log-level", 1, 0, O_LOGLEVEL}, {"log-format", 1, 0, O_LOGFMT},
        {"config", 1, 0, O_CONFIG},      {"no-connection-log", 0, 0, O_NOLOG},
        {"check", 0, 0, O_CHECK},        {"help", 0, 0, O_HELP},
    };
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
        lo[nlo++] = special[i];
    lo[nlo] = (struct option){0, 0, 0, 0};

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (opt >= O_KEYED && opt < O_KEYED + (int)N_RFLAGS) {
            if (nset < sizeof(set) / sizeof(set[0]))
                set[nset++] = (struct kv){rflags[opt - O_KEYED].key, optarg, NULL};
            continue;
        }
        switch (opt) {
        case O_CACERT: { /* repeatable: the lists join */
            size_t have = cacerts ? strlen(cacerts) : 0, add = strlen(optarg);
            char *n = realloc(cacerts, have + add + 2);
            if (!n)
                goto out;
            cacerts = n;
            if (have)
                cacerts[have++] = ',';
            memcpy(cacerts + have, optarg, add + 1);
            break;
        }
        case O_STORE:
            free(store);
            if (!(store = strdup(optarg)))
                goto out;
            mt_db_url_hide_password(optarg);
            break;
        case O_DBHOST: dbhost = optarg; break;
        case O_DBPORT: dbport = optarg; break;
        case O_DBUSER: dbuser = optarg; break;
        case O_DBNAME: dbname = optarg; break;
        case O_DBPASS:
            free(dbpass);
            if (!(dbpass = strdup(optarg)))
                goto out;
            memset(optarg, '*', strlen(optarg));
            break;
        case O_LOGLEVEL: {
            int lvl = meshtls_log_level_parse(optarg);
            if (lvl < 0) {
                status = bad("--log-level", optarg, "expected debug, info, warn or error");
                goto out;
            }
            meshtls_log_set_level(lvl);
            break;
        }
        case O_LOGFMT:
            if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
                status = bad("--log-format", optarg, "expected text or json");
                goto out;
            }
            meshtls_log_set_json(!strcmp(optarg, "json"));
            break;
        case O_CONFIG: config_file = optarg; break;
        case O_NOLOG:
            set[nset++] = (struct kv){"router.connection_log", "false", "--no-connection-log"};
            break;
        case O_CHECK: check = 1; break;
        case O_HELP:
            router_usage(stdout);
            status = 0;
            goto out;
        default: router_usage(stderr); goto out;
        }
        if (nset >= sizeof(set) / sizeof(set[0]) - 2) {
            fprintf(stderr, "meshtls proxy router: too many flags\n");
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "meshtls proxy router: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (cacerts)
        set[nset++] = (struct kv){"router.cacert", cacerts, "--cacert"};
    if (store)
        set[nset++] = (struct kv){"router.store", store, "--store"};

    /* flags > MESHTLS_ROUTER_* > the YAML file's router: section > defaults */
    if (meshtls_config_new(&cfg) != 0 || rt_config_register(cfg, &err) != 0) {
        cli_print_err("proxy router", &err, MESHTLS_ENOMEM);
        status = 1;
        goto out;
    }
    if ((config_file && (rc = meshtls_config_load_file(cfg, config_file, &err)) != 0) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)) != 0) {
        cli_print_err("proxy router", &err, rc);
        status = cli_exit_code(rc);
        goto out;
    }
    for (size_t i = 0; i < nset; i++)
        if ((rc = meshtls_config_set(cfg, set[i].key, set[i].val, set[i].flag, &err)) != 0) {
            cli_print_err("proxy router", &err, rc);
            status = cli_exit_code(rc);
            goto out;
        }

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c.workers = ncpu > 0 && ncpu < 256 ? (int)ncpu : 1;
    c.shutdown_timeout_ms = 30000;
    c.listen = meshtls_config_get(cfg, "router.listen", NULL);
    c.tls.cert_file = meshtls_config_get(cfg, "router.cert", NULL);
    c.tls.key_file = meshtls_config_get(cfg, "router.key", NULL);
    c.tls.crl_file = meshtls_config_get(cfg, "router.crl", NULL);
    c.issuer = meshtls_config_get(cfg, "router.issuer", NULL);
    c.status = meshtls_config_get(cfg, "router.status", NULL);
    const char *store_url = meshtls_config_get(cfg, "router.store", NULL);
    int connlog = 1;
    meshtls_config_get_bool(cfg, "router.connection_log", &connlog, NULL);
    c.connlog = connlog;
    int_key(cfg, "router.workers", &c.workers);
    int_key(cfg, "router.job_threads", &c.job_threads);
    int_key(cfg, "router.max_conns", &c.max_conns);
    int_key(cfg, "router.user_rate", &c.limits.user_rate);
    int_key(cfg, "router.org_rate", &c.limits.org_rate);
    int_key(cfg, "router.user_sessions", &c.limits.user_sessions);
    int_key(cfg, "router.org_sessions", &c.limits.org_sessions);
    if (dur_key(cfg, "router.handshake_timeout", &c.handshake_timeout_ms) ||
        dur_key(cfg, "router.line_timeout", &c.line_timeout_ms) ||
        dur_key(cfg, "router.authz_timeout", &c.authz_timeout_ms) ||
        dur_key(cfg, "router.connect_timeout", &c.connect_timeout_ms) ||
        dur_key(cfg, "router.idle_timeout", &c.idle_timeout_ms) ||
        dur_key(cfg, "router.cache_ttl", &c.cache_ttl_ms) ||
        dur_key(cfg, "router.stale_max", &c.stale_max_ms) ||
        dur_key(cfg, "router.recheck_interval", &c.recheck_ms))
        goto out;
    const char *ca_list = meshtls_config_get(cfg, "router.cacert", NULL);
    if (ca_list) {
        char *save = NULL;
        if (!(ca_copy = strdup(ca_list)))
            goto out;
        for (char *t = strtok_r(ca_copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (n_ca == RT_MAX_CA) {
                status = bad("--cacert", ca_list, "at most 8 CA files");
                goto out;
            }
            ca_files[n_ca++] = t;
        }
    }
    if (store_url && (dbhost || dbport || dbuser || dbname)) {
        fprintf(stderr, "meshtls proxy router: give --store or the --db-* flags, not both\n");
        goto out;
    }
    if (!store_url && (dbhost || dbport || dbuser || dbname || dbpass)) {
        int r = build_pg_url(pgurl, sizeof(pgurl), dbhost, dbport, dbuser, dbname);
        if (r == -2) {
            status = bad("--db-port", dbport, "expected 1..65535");
            goto out;
        }
        if (r != 0) {
            fprintf(stderr, "meshtls proxy router: the --db-* values are too long\n");
            goto out;
        }
        store_url = pgurl;
    }
    c.store_url = store_url;
    if (dbpass && setenv("PGPASSWORD", dbpass, 1) != 0)
        goto out;
    const char *missing = !c.listen          ? "--listen (router.listen)"
                          : !c.tls.cert_file ? "--cert (router.cert)"
                          : !c.tls.key_file  ? "--key (router.key)"
                          : n_ca == 0        ? "--cacert (router.cacert)"
                          : !c.issuer        ? "--issuer (router.issuer)"
                          : !c.store_url     ? "--store (router.store) or --db-host ..."
                                             : NULL;
    if (missing) {
        fprintf(stderr,
                "meshtls proxy router: %s is required (a flag, MESHTLS_ROUTER_* or the "
                "--config file's router: section; see --help)\n",
                missing);
        goto out;
    }
    c.tls.ca_file = ca_files[0];
    c.ca_files = ca_files;
    c.n_ca_files = n_ca;
    if (check) {
        SSL_CTX *ctx = NULL;
        int64_t na = 0;
        struct mt_db *db = NULL;
        struct mt_db_opts o = {.connect_timeout_s = 5, .acquire_timeout_ms = 5000};
        rc = rt_tls_build(&c, &ctx, &na, &err);
        SSL_CTX_free(ctx);
        if (rc == 0 && (rc = mt_db_open(c.store_url, &o, &db, &err)) == 0)
            rc = rt_db_migrate(db, &err);
        if (rc == 0)
            printf("ok: TLS files, issuer %s, database %s (%s) reachable with 004's tables\n",
                   c.issuer, mt_db_url_safe(db), mt_db_backend_name(db));
        mt_db_close(db);
        if (rc)
            cli_print_err("proxy router --check", &err, rc);
        status = rc ? cli_exit_code(rc) : 0;
        goto out;
    }
    rc = rt_run(&c, &err);
    if (rc)
        cli_print_err("proxy router", &err, rc);
    status = rc ? cli_exit_code(rc) : 0;
out:
    meshtls_config_free(cfg);
    free(ca_copy);
    free(cacerts);
    if (store)
        memset(store, 0, strlen(store));
    if (dbpass)
        memset(dbpass, 0, strlen(dbpass));
    free(store);
    free(dbpass);
    return status;
}

/* ---- meshtls router: the data (hosts, teams, users, grants) ------------------------- */

/* Add to / remove from an id list: one statement per table, column and backend (names
 * cannot be parameters).  Adding is idempotent; removing an absent id changes nothing. */
#define PG_ADD(t, k, col)                                                                          \
    "UPDATE " t " SET " col " = array_append(" col ", $2) WHERE " k " = $1 AND NOT ($2 = ANY(" col \
    "))"
#define PG_DEL(t, k, col) "UPDATE " t " SET " col " = array_remove(" col ", $2) WHERE " k " = $1"
#define SQ_ADD(t, k, col)                                                                          \
    "UPDATE " t " SET " col " = json_insert(" col ", '$[#]', $2) WHERE " k                         \
    " = $1 AND NOT EXISTS (SELECT 1 FROM json_each(" t "." col ") WHERE value = $2)"
#define SQ_DEL(t, k, col)                                                                          \
    "UPDATE " t " SET " col " = (SELECT json_group_array(value) FROM json_each(" t "." col         \
    ") WHERE value <> $2) WHERE " k " = $1"

enum list_kind { L_HOST_USERS = 0, L_HOST_TEAMS, L_TEAM_USERS };
static const char *const list_sql[3][2][2] = {
    /* [kind][add/del][sqlite/postgres] */
    [L_HOST_USERS] = {{SQ_ADD("backend_hosts", "connect_id", "user_ids"),
                       PG_ADD("backend_hosts", "connect_id", "user_ids")},
                      {SQ_DEL("backend_hosts", "connect_id", "user_ids"),
                       PG_DEL("backend_hosts", "connect_id", "user_ids")}},
    [L_HOST_TEAMS] = {{SQ_ADD("backend_hosts", "connect_id", "team_ids"),
                       PG_ADD("backend_hosts", "connect_id", "team_ids")},
                      {SQ_DEL("backend_hosts", "connect_id", "team_ids"),
                       PG_DEL("backend_hosts", "connect_id", "team_ids")}},
    [L_TEAM_USERS] = {{SQ_ADD("teams", "team_id", "user_ids"),
                       PG_ADD("teams", "team_id", "user_ids")},
                      {SQ_DEL("teams", "team_id", "user_ids"),
                       PG_DEL("teams", "team_id", "user_ids")}},
};

static void data_usage(FILE *f)
{
    fprintf(f, "usage: meshtls router --store URL COMMAND ...\n"
               "  hosts add CONNECT_ID --org ORG --addr IP[:PORT] [--host-user U]\n"
               "  hosts rm CONNECT_ID\n"
               "  teams add TEAM --org ORG        teams rm TEAM\n"
               "  users add USER --org ORG        users rm USER\n"
               "  members add|rm TEAM USER        (a user in a team)\n"
               "  grant CONNECT_ID (--user USER | --team TEAM)\n"
               "  revoke CONNECT_ID (--user USER | --team TEAM)\n"
               "  orgs                            the organisations the tables name\n"
               "  list [--org ORG]                hosts with their grants, teams with members\n"
               "  check CONNECT_ID --org ORG --user USER   what the router would answer\n"
               "  connections [--org ORG]         the last 50 connections (router_connections)\n"
               "URL: sqlite:PATH or postgres://... (004's tables are created if missing).\n"
               "Plain SQL equivalents: docs/ROUTER.md.\n");
}

/* A valid id for the tables: what a SPIFFE path segment allows (so certificates can name it). */
static int id_ok(const char *what, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    int ok = n > 0 && n <= RT_ID_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-';
    if (!ok)
        fprintf(stderr,
                "meshtls router: %s '%s': expected 1..%d characters A-Z a-z 0-9 . _ - "
                "(as in spiffe://ISSUER/orgs/<org>/users/<user>)\n",
                what, s ? s : "", RT_ID_MAX);
    return ok;
}

static int exec1(struct mt_db *db, const char *sql, const struct mt_db_param *p, size_t n,
                 int64_t *changes, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc == 0)
        rc = mt_db_exec(c, sql, p, n, changes, err);
    if (rc && c && mt_db_errkind(c) == MT_DB_ERR_UNIQUE)
        rc = meshtls_err_set(err, MESHTLS_EEXIST, "it exists already (rm it first)");
    mt_db_release(c);
    return rc;
}

/* The org of a host or a team, into out (RT_ID_MAX + 1).  @return 1 found, 0 not, < 0. */
static int org_of(struct mt_db *db, const char *sql, const char *id, char *out,
                  struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[1] = {MT_DB_TEXT(id)};
    int rc = mt_db_acquire(db, &c, err), found = 0;
    if (rc == 0 && (rc = mt_db_query(c, sql, p, 1, &r, err)) == 0) {
        found = mt_db_row_next(r, err);
        if (found == 1)
            snprintf(out, RT_ID_MAX + 1, "%s", mt_db_col_text(r, 0) ? mt_db_col_text(r, 0) : "");
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc ? rc : found;
}

static const char host_org_sql[] = "SELECT org_id FROM backend_hosts WHERE connect_id = $1";
static const char team_org_sql[] = "SELECT org_id FROM teams WHERE team_id = $1";

static int print_rows(struct mt_db *db, const char *sql, const char *org, int ncol,
                      const char *head, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[1] = {MT_DB_TEXT(org)};
    int rc = mt_db_acquire(db, &c, err), x;
    if (rc == 0 && (rc = mt_db_query(c, sql, p, 1, &r, err)) == 0) {
        printf("%s\n", head);
        while ((x = mt_db_row_next(r, err)) == 1) {
            for (int i = 0; i < ncol; i++) {
                const char *v = mt_db_col_text(r, i);
                printf("%s%s", i ? "\t" : "", v ? v : "-");
            }
            printf("\n");
        }
        if (x < 0)
            rc = MESHTLS_ESTORE;
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

int cmd_router(int argc, char **argv)
{
    enum { D_STORE = 1, D_ORG, D_ADDR, D_USER, D_TEAM, D_HOSTUSER, D_HELP };
    static const struct option dopts[] = {
        {"store", 1, 0, D_STORE}, {"org", 1, 0, D_ORG},   {"addr", 1, 0, D_ADDR},
        {"user", 1, 0, D_USER},   {"team", 1, 0, D_TEAM}, {"host-user", 1, 0, D_HOSTUSER},
        {"help", 0, 0, D_HELP},   {0, 0, 0, 0},
    };
    char *store = NULL;
    const char *org = NULL, *addr = NULL, *user = NULL, *team = NULL, *host_user = NULL;
    int opt, status = 2, rc = 0;
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", dopts, NULL)) != -1) {
        switch (opt) {
        case D_STORE:
            free(store);
            if (!(store = strdup(optarg)))
                return 1;
            mt_db_url_hide_password(optarg);
            break;
        case D_ORG: org = optarg; break;
        case D_ADDR: addr = optarg; break;
        case D_USER: user = optarg; break;
        case D_TEAM: team = optarg; break;
        case D_HOSTUSER: host_user = optarg; break;
        case D_HELP:
            data_usage(stdout);
            status = 0;
            goto out;
        default: data_usage(stderr); goto out;
        }
    }
    const char *a[4] = {0};
    int na = 0;
    for (int i = optind; i < argc && na < 4; i++)
        a[na++] = argv[i];
    if (na == 0 || !store) {
        data_usage(stderr);
        goto out;
    }
    struct mt_db_opts o = {.connect_timeout_s = 10};
    if ((rc = mt_db_open(store, &o, &db, &err)) != 0 || (rc = rt_db_migrate(db, &err)) != 0)
        goto fail;
    int be = mt_db_backend(db) == MT_DB_POSTGRES;
    int64_t ch = 0;
    const char *cmd = a[0], *sub = a[1];
    if (!strcmp(cmd, "hosts") && sub && a[2] && !strcmp(sub, "add")) {
        char norm[300];
        if (!org || !addr) {
            fprintf(stderr, "meshtls router hosts add: --org and --addr are required\n");
            goto out;
        }
        if (!id_ok("--org", org))
            goto out;
        if (rt_connect_id_check(a[2], strlen(a[2]), (char[RT_CONNECT_ID_MAX + 1]){0}) != RT_OK) {
            fprintf(stderr,
                    "meshtls router: connect id '%s': 1..%d characters A-Z a-z 0-9 . _ "
                    "~ : @ + -\n",
                    a[2], RT_CONNECT_ID_MAX);
            goto out;
        }
        if (rt_backend_addr(addr, norm, sizeof(norm)) != 0) {
            fprintf(stderr,
                    "meshtls router: --addr '%s': expected IP[:PORT], [IPv6]:PORT or "
                    "NAME[:PORT]\n",
                    addr);
            goto out;
        }
        struct mt_db_param p[4] = {MT_DB_TEXT(a[2]), MT_DB_TEXT(addr), MT_DB_TEXT(org),
                                   MT_DB_TEXT(host_user)};
        rc = exec1(db,
                   "INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, host_user) "
                   "VALUES ($1, $2, $3, $4)",
                   p, 4, NULL, &err);
    } else if ((!strcmp(cmd, "teams") || !strcmp(cmd, "users")) && sub && a[2] &&
               !strcmp(sub, "add")) {
        if (!org) {
            fprintf(stderr, "meshtls router %s add: --org is required\n", cmd);
            goto out;
        }
        if (!id_ok("--org", org) || !id_ok(cmd[0] == 't' ? "team" : "user", a[2]))
            goto out;
        struct mt_db_param p[2] = {MT_DB_TEXT(a[2]), MT_DB_TEXT(org)};
        rc = exec1(db,
                   cmd[0] == 't' ? "INSERT INTO teams (team_id, org_id) VALUES ($1, $2)"
                                 : "INSERT INTO users (user_id, org_id) VALUES ($1, $2)",
                   p, 2, NULL, &err);
    } else if ((!strcmp(cmd, "hosts") || !strcmp(cmd, "teams") || !strcmp(cmd, "users")) && sub &&
               a[2] && !strcmp(sub, "rm")) {
        struct mt_db_param p[1] = {MT_DB_TEXT(a[2])};
        rc = exec1(db,
                   cmd[0] == 'h'   ? "DELETE FROM backend_hosts WHERE connect_id = $1"
                   : cmd[0] == 't' ? "DELETE FROM teams WHERE team_id = $1"
                                   : "DELETE FROM users WHERE user_id = $1",
                   p, 1, &ch, &err);
        if (rc == 0 && ch == 0)
            rc = meshtls_err_set(&err, MESHTLS_ENOENT, "no %s '%s'", cmd, a[2]);
    } else if (!strcmp(cmd, "members") && sub && a[2] && a[3] &&
               (!strcmp(sub, "add") || !strcmp(sub, "rm"))) {
        if (!id_ok("user", a[3]))
            goto out;
        struct mt_db_param p[2] = {MT_DB_TEXT(a[2]), MT_DB_TEXT(a[3])};
        rc = exec1(db, list_sql[L_TEAM_USERS][sub[0] == 'r'][be], p, 2, &ch, &err);
        char torg[RT_ID_MAX + 1];
        if (rc == 0 && ch == 0 && org_of(db, team_org_sql, a[2], torg, &err) == 0)
            rc = meshtls_err_set(&err, MESHTLS_ENOENT, "no team '%s' (teams add it first)", a[2]);
    } else if ((!strcmp(cmd, "grant") || !strcmp(cmd, "revoke")) && sub) {
        if (!user == !team) {
            fprintf(stderr, "meshtls router %s: give --user USER or --team TEAM\n", cmd);
            goto out;
        }
        char horg[RT_ID_MAX + 1], torg[RT_ID_MAX + 1];
        int f = org_of(db, host_org_sql, sub, horg, &err);
        if (f < 0) {
            rc = f;
            goto fail;
        }
        if (f == 0) {
            rc = meshtls_err_set(&err, MESHTLS_ENOENT, "no host '%s' (hosts add it first)", sub);
            goto fail;
        }
        if (team && cmd[0] == 'g') {
            /* 004's rule counts only teams of the host's organisation: say so now */
            f = org_of(db, team_org_sql, team, torg, &err);
            if (f < 0) {
                rc = f;
                goto fail;
            }
            if (f == 0 || strcmp(torg, horg) != 0) {
                rc = meshtls_err_set(&err, MESHTLS_EINVAL,
                                     "team '%s' is not a team of organisation '%s' (the host's); "
                                     "it would grant nothing",
                                     team, horg);
                goto fail;
            }
        }
        if (user && !id_ok("--user", user))
            goto out;
        struct mt_db_param p[2] = {MT_DB_TEXT(sub), MT_DB_TEXT(user ? user : team)};
        rc = exec1(db, list_sql[user ? L_HOST_USERS : L_HOST_TEAMS][cmd[0] == 'r'][be], p, 2, &ch,
                   &err);
    } else if (!strcmp(cmd, "orgs")) {
        rc = print_rows(
            db,
            "SELECT org_id FROM backend_hosts WHERE CAST($1 AS TEXT) IS NULL OR 1 = 1 UNION "
            "SELECT org_id FROM teams UNION SELECT org_id FROM users ORDER BY 1",
            NULL, 1, "ORG", &err);
    } else if (!strcmp(cmd, "list")) {
        rc = print_rows(
            db,
            "SELECT connect_id, org_id, internal_ip_addr, user_ids, team_ids FROM "
            "backend_hosts WHERE CAST($1 AS TEXT) IS NULL OR org_id = $1 ORDER BY org_id, "
            "connect_id",
            org, 5, "HOST\tORG\tADDRESS\tUSERS\tTEAMS", &err);
        if (rc == 0)
            rc = print_rows(
                db,
                "SELECT team_id, org_id, user_ids FROM teams WHERE CAST($1 AS TEXT) IS NULL "
                "OR org_id = $1 ORDER BY org_id, team_id",
                org, 3, "TEAM\tORG\tMEMBERS", &err);
    } else if (!strcmp(cmd, "connections")) {
        rc = print_rows(db,
                        "SELECT started_at_ms, org_id, user_id, connect_id, client_addr, result, "
                        "reason, bytes_up, bytes_down, duration_ms, decision_us FROM "
                        "router_connections WHERE CAST($1 AS TEXT) IS NULL OR org_id = $1 ORDER "
                        "BY id DESC LIMIT 50",
                        org, 11,
                        "AT_MS\tORG\tUSER\tHOST\tCLIENT\tRESULT\tREASON\tUP\tDOWN\tMS\tDECISION_US",
                        &err);
    } else if (!strcmp(cmd, "check") && sub) {
        if (!org || !user) {
            fprintf(stderr, "meshtls router check: --org and --user are required\n");
            goto out;
        }
        struct rt_lookup lk;
        if ((rc = rt_db_lookup(db, sub, org, user, &lk, &err)) == 0) {
            printf("%s", rt_code_line(lk.code));
            if (lk.code == RT_OK)
                printf("# to %s, granted by %s\n", lk.addr, lk.via);
            status = lk.code == RT_OK ? 0 : 1;
            goto out;
        }
    } else {
        data_usage(stderr);
        goto out;
    }
fail:
    if (rc == 0 && strcmp(a[0], "list") && strcmp(a[0], "orgs") && strcmp(a[0], "connections"))
        rc = rt_db_bump(db, &err); /* running routers drop their decision caches */
    if (rc) {
        cli_print_err("router", &err, rc);
        status = cli_exit_code(rc);
    } else {
        status = 0;
    }
out:
    mt_db_close(db);
    if (store)
        memset(store, 0, strlen(store));
    free(store);
    return status;
}
