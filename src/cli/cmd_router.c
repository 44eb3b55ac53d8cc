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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "db.h"
#include "keys.h"
#include "meshtls/config.h"
#include "router.h"
#include "router_keys.h"

#define RT_MAX_CA 8

static const char ROUTER_HEAD[] =
    "usage: meshtls proxy router --listen ADDR --cert FILE --key FILE\n"
    "                            --cacert FILE[,FILE...] --issuer DOMAIN\n"
    "                            --store sqlite:PATH|postgres://... [options]\n"
    "\n"
    "The mTLS router (bastion): clients present a user certificate\n"
    "spiffe://DOMAIN/orgs/<org>/users/<user>, send '<connect_id>\\n', and are relayed to\n"
    "backend_hosts.internal_ip_addr when 004's rule allows, with 'OK\\n'; otherwise\n"
    "'ERROR: <code> <message>\\n' (docs/ROUTER.md).  A --store URL's password and\n"
    "--db-password are hidden from ps at once; prefer PGPASSWORD or ~/.pgpass.\n";

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

/* postgres://[USER@][HOST][:PORT]/[DB] from 004's flags (`port` 0: none; the password goes
 * by PGPASSWORD). */
static int build_pg_url(char *out, size_t cap, const char *host, long port, const char *user,
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
        w = snprintf(out + at, cap - at, ":%ld", port);
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

/* The router.* keys into `c` (strings borrowed from `cfg`; CA files into `ca_files`, their
 * text in *ca_copy, owned by the caller).  @return 0, or 2 after printing what is wrong. */
static int router_config_from(const struct cli_cmd *cc, struct rt_config *c, char **ca_copy,
                              const char **ca_files, char *pgurl, size_t pgcap)
{
    const struct meshtls_config *cfg = cc->cfg;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n_ca = 0;
    c->shutdown_timeout_ms = 30000;
    c->workers = (int)cli_int(cfg, "router.workers", ncpu > 0 && ncpu < 256 ? ncpu : 1);
    c->job_threads = (int)cli_int(cfg, "router.job_threads", 4);
    c->max_conns = (int)cli_int(cfg, "router.max_conns", 10000);
    c->limits.user_rate = (int)cli_int(cfg, "router.user_rate", 0);
    c->limits.org_rate = (int)cli_int(cfg, "router.org_rate", 0);
    c->limits.user_sessions = (int)cli_int(cfg, "router.user_sessions", 0);
    c->limits.org_sessions = (int)cli_int(cfg, "router.org_sessions", 0);
    /* durations in ms; every range is at most 7 days, so each fits an int */
    c->handshake_timeout_ms = (int)cli_int(cfg, "router.handshake_timeout", 0);
    c->line_timeout_ms = (int)cli_int(cfg, "router.line_timeout", 0);
    c->authz_timeout_ms = (int)cli_int(cfg, "router.authz_timeout", 0);
    c->connect_timeout_ms = (int)cli_int(cfg, "router.connect_timeout", 0);
    c->idle_timeout_ms = (int)cli_int(cfg, "router.idle_timeout", 0);
    c->cache_ttl_ms = (int)cli_int(cfg, "router.cache_ttl", 0);
    c->stale_max_ms = (int)cli_int(cfg, "router.stale_max", 0);
    c->recheck_ms = (int)cli_int(cfg, "router.recheck_interval", 0);
    c->connlog = cli_bool(cfg, "router.connection_log", 1);
    c->status = meshtls_config_get(cfg, "router.status", NULL);
    c->tls.crl_file = meshtls_config_get(cfg, "router.crl", NULL);
    const char *ca_list;
    if (!(c->listen = cli_need(cc, "router.listen")) ||
        !(c->tls.cert_file = cli_need(cc, "router.cert")) ||
        !(c->tls.key_file = cli_need(cc, "router.key")) ||
        !(ca_list = cli_need(cc, "router.cacert")) || !(c->issuer = cli_need(cc, "router.issuer")))
        return 2;
    /* a comma-separated list, or one item per repeated --cacert */
    if (!(*ca_copy = strdup(ca_list)))
        return 1;
    for (char *save = NULL, *t = strtok_r(*ca_copy, ",\n", &save); t;
         t = strtok_r(NULL, ",\n", &save)) {
        if (n_ca == RT_MAX_CA) {
            fprintf(stderr, "meshtls proxy router: router.cacert: at most %d CA files\n",
                    RT_MAX_CA);
            return 2;
        }
        ca_files[n_ca++] = t;
    }
    if (n_ca == 0) {
        fprintf(stderr, "meshtls proxy router: router.cacert names no file\n");
        return 2;
    }
    c->tls.ca_file = ca_files[0];
    c->ca_files = ca_files;
    c->n_ca_files = n_ca;
    /* the database: a URL, or 004's --db-* flags (the password through PGPASSWORD) */
    const char *host = meshtls_config_get(cfg, "router.db_host", NULL);
    const char *user = meshtls_config_get(cfg, "router.db_user", NULL);
    const char *name = meshtls_config_get(cfg, "router.db_name", NULL);
    const char *pass = meshtls_config_get(cfg, "router.db_password", NULL);
    long port = cli_int(cfg, "router.db_port", 0);
    c->store_url = meshtls_config_get(cfg, "router.store", NULL);
    if (c->store_url && (host || port || user || name)) {
        fprintf(stderr, "meshtls proxy router: give --store or the --db-* flags, not both\n");
        return 2;
    }
    if (!c->store_url && (host || port || user || name || pass)) {
        if (build_pg_url(pgurl, pgcap, host, port, user, name) != 0) {
            fprintf(stderr, "meshtls proxy router: the --db-* values are too long\n");
            return 2;
        }
        c->store_url = pgurl;
    }
    if (!c->store_url) {
        fprintf(stderr, "meshtls proxy router: router.store is not set: give --store URL (or "
                        "004's --db-host ...), set MESHTLS_ROUTER_STORE, or add 'store:' under "
                        "'router:' in the config file\n");
        return 2;
    }
    if (pass && setenv("PGPASSWORD", pass, 1) != 0)
        return 1;
    return 0;
}

int cmd_proxy_router(int argc, char **argv)
{
    struct rt_config c;
    const char *ca_files[RT_MAX_CA];
    char *ca_copy = NULL, pgurl[1024];
    int check = 0, status, rc;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const struct meshtls_config_opt own[] = {{"--check", 0, NULL, &check}};
    struct cli_cmd cc = {.what = "proxy router",
                         .tables = CLI_TABLE_ROUTER,
                         .role = "router",
                         .modes = RT_KEY_SERVE,
                         .opts = own,
                         .nopts = 1};
    memset(&c, 0, sizeof(c));
    /* flags > MESHTLS_ROUTER_* > the YAML file's router: section > defaults */
    status = cli_config_load(&cc, argc - 1, argv + 1);
    cli_hide_passwords(argc - 1, argv + 1);
    if (status == 0 && cc.help)
        cli_usage(stdout, &cc, ROUTER_HEAD,
                  "  --check                        validate everything (TLS files, database and\n"
                  "                                 004's tables) and exit 0, or 1 naming the\n"
                  "                                 problem (2: a configuration error)\n");
    if (status || cc.help)
        goto out;
    if ((status = router_config_from(&cc, &c, &ca_copy, ca_files, pgurl, sizeof(pgurl))) != 0)
        goto out;
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
    meshtls_config_free(cc.cfg);
    free(ca_copy);
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

static const char DATA_HEAD[] =
    "usage: meshtls router --store URL COMMAND ...\n"
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
    "URL: sqlite:PATH or postgres://... (004's tables are created if missing); the router's\n"
    "MESHTLS_ROUTER_STORE and router: store: serve too.  Plain SQL equivalents: docs/ROUTER.md.\n";

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
    const char *a[4] = {0};
    int status = 2, rc = 0;
    struct mt_db *db = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct cli_cmd cc = {.what = "router",
                         .tables = CLI_TABLE_ROUTER,
                         .role = "router",
                         .modes = RT_KEY_DATA,
                         .pos = a,
                         .maxpos = 4};
    status = cli_config_load(&cc, argc - 1, argv + 1);
    cli_hide_passwords(argc - 1, argv + 1);
    if (status == 0 && cc.help)
        cli_usage(stdout, &cc, DATA_HEAD, NULL);
    if (status || cc.help)
        goto out;
    status = 2;
    const struct meshtls_config *cfg = cc.cfg;
    const char *store = meshtls_config_get(cfg, "router.store", NULL);
    const char *org = meshtls_config_get(cfg, "router.org", NULL);
    const char *addr = meshtls_config_get(cfg, "router.addr", NULL);
    const char *user = meshtls_config_get(cfg, "router.user", NULL);
    const char *team = meshtls_config_get(cfg, "router.team", NULL);
    const char *host_user = meshtls_config_get(cfg, "router.host_user", NULL);
    int na = (int)cc.npos;
    if (na == 0) {
        fprintf(stderr, "meshtls router: give a COMMAND (see --help)\n");
        goto out;
    }
    if (!(store = cli_need(&cc, "router.store")))
        goto out;
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
        fprintf(stderr, "meshtls router: unknown or incomplete command '%s' (see --help)\n", cmd);
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
    meshtls_config_free(cc.cfg);
    return status;
}
