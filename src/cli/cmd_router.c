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
            "  --check                  validate everything (files, database) and exit\n",
            RT_DEFAULT_PORT);
}

enum {
    O_LISTEN = 1,
    O_CERT,
    O_KEY,
    O_CACERT,
    O_CRL,
    O_ISSUER,
    O_STORE,
    O_DBHOST,
    O_DBPORT,
    O_DBUSER,
    O_DBNAME,
    O_DBPASS,
    O_STATUS,
    O_LOGLEVEL,
    O_LOGFMT,
    O_WORKERS,
    O_JOBS,
    O_LINE_TO,
    O_AUTHZ_TO,
    O_CONN_TO,
    O_IDLE_TO,
    O_HS_TO,
    O_MAXCONN,
    O_CHECK,
    O_HELP,
};

static const struct option ropts[] = {
    {"listen", 1, 0, O_LISTEN},
    {"cert", 1, 0, O_CERT},
    {"server-cert", 1, 0, O_CERT},
    {"key", 1, 0, O_KEY},
    {"server-key", 1, 0, O_KEY},
    {"cacert", 1, 0, O_CACERT},
    {"ca-certs", 1, 0, O_CACERT},
    {"crl", 1, 0, O_CRL},
    {"issuer", 1, 0, O_ISSUER},
    {"store", 1, 0, O_STORE},
    {"db-host", 1, 0, O_DBHOST},
    {"db-port", 1, 0, O_DBPORT},
    {"db-user", 1, 0, O_DBUSER},
    {"db-name", 1, 0, O_DBNAME},
    {"db-password", 1, 0, O_DBPASS},
    {"status", 1, 0, O_STATUS},
    {"log-level", 1, 0, O_LOGLEVEL},
    {"log-format", 1, 0, O_LOGFMT},
    {"workers", 1, 0, O_WORKERS},
    {"job-threads", 1, 0, O_JOBS},
    {"line-timeout", 1, 0, O_LINE_TO},
    {"authz-timeout", 1, 0, O_AUTHZ_TO},
    {"connect-timeout", 1, 0, O_CONN_TO},
    {"idle-timeout", 1, 0, O_IDLE_TO},
    {"handshake-timeout", 1, 0, O_HS_TO},
    {"max-conns", 1, 0, O_MAXCONN},
    {"check", 0, 0, O_CHECK},
    {"help", 0, 0, O_HELP},
    {0, 0, 0, 0},
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

static int dur(const char *flag, const char *v, int *out)
{
    int64_t ms = 0;
    if (mt_parse_duration_ms(v, 86400000LL * 7, &ms) != 0 || ms <= 0)
        return bad(flag, v, "expected a duration such as 500ms, 5s, 1m");
    *out = (int)ms;
    return 0;
}

int cmd_proxy_router(int argc, char **argv)
{
    struct rt_config c = {0};
    const char *ca_files[RT_MAX_CA];
    size_t n_ca = 0, n_copies = 0;
    char *ca_copies[RT_MAX_CA] = {0}, *store = NULL, *dbpass = NULL;
    const char *dbhost = NULL, *dbport = NULL, *dbuser = NULL, *dbname = NULL;
    int check = 0, status = 2, opt, v;
    char pgurl[1024];
    struct meshtls_err err = MESHTLS_ERR_INIT;

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c.workers = ncpu > 0 && ncpu < 256 ? (int)ncpu : 1;
    c.job_threads = 4;
    c.max_conns = 10000;
    c.handshake_timeout_ms = 10000;
    c.line_timeout_ms = 5000;
    c.authz_timeout_ms = 3000;
    c.connect_timeout_ms = 5000;
    c.idle_timeout_ms = 3600000;
    c.shutdown_timeout_ms = 30000;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", ropts, NULL)) != -1) {
        switch (opt) {
        case O_LISTEN: c.listen = optarg; break;
        case O_CERT: c.tls.cert_file = optarg; break;
        case O_KEY: c.tls.key_file = optarg; break;
        case O_CRL: c.tls.crl_file = optarg; break;
        case O_ISSUER: c.issuer = optarg; break;
        case O_STATUS: c.status = optarg; break;
        case O_CACERT: {
            char *dup = n_copies < RT_MAX_CA ? strdup(optarg) : NULL, *save = NULL;
            if (!dup) {
                status = bad("--cacert", optarg, "at most 8 CA files");
                goto out;
            }
            ca_copies[n_copies++] = dup; /* the tokens point into it */
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (n_ca == RT_MAX_CA) {
                    status = bad("--cacert", optarg, "at most 8 CA files");
                    goto out;
                }
                ca_files[n_ca++] = t;
            }
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
        case O_WORKERS:
            if (mt_parse_int(optarg, 1, 256, &v) != 0) {
                status = bad("--workers", optarg, "expected 1..256");
                goto out;
            }
            c.workers = v;
            break;
        case O_JOBS:
            if (mt_parse_int(optarg, 1, 64, &v) != 0) {
                status = bad("--job-threads", optarg, "expected 1..64");
                goto out;
            }
            c.job_threads = v;
            break;
        case O_MAXCONN:
            if (mt_parse_int(optarg, 1, 1000000, &v) != 0) {
                status = bad("--max-conns", optarg, "expected 1..1000000");
                goto out;
            }
            c.max_conns = v;
            break;
        case O_LINE_TO:
            if (dur("--line-timeout", optarg, &c.line_timeout_ms))
                goto out;
            break;
        case O_AUTHZ_TO:
            if (dur("--authz-timeout", optarg, &c.authz_timeout_ms))
                goto out;
            break;
        case O_CONN_TO:
            if (dur("--connect-timeout", optarg, &c.connect_timeout_ms))
                goto out;
            break;
        case O_IDLE_TO:
            if (dur("--idle-timeout", optarg, &c.idle_timeout_ms))
                goto out;
            break;
        case O_HS_TO:
            if (dur("--handshake-timeout", optarg, &c.handshake_timeout_ms))
                goto out;
            break;
        case O_CHECK: check = 1; break;
        case O_HELP:
            router_usage(stdout);
            status = 0;
            goto out;
        default: router_usage(stderr); goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "meshtls proxy router: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (store && (dbhost || dbport || dbuser || dbname)) {
        fprintf(stderr, "meshtls proxy router: give --store or the --db-* flags, not both\n");
        goto out;
    }
    if (!store && (dbhost || dbport || dbuser || dbname || dbpass)) {
        int r = build_pg_url(pgurl, sizeof(pgurl), dbhost, dbport, dbuser, dbname);
        if (r == -2) {
            status = bad("--db-port", dbport, "expected 1..65535");
            goto out;
        }
        if (r != 0) {
            fprintf(stderr, "meshtls proxy router: the --db-* values are too long\n");
            goto out;
        }
        c.store_url = pgurl;
    } else {
        c.store_url = store;
    }
    if (dbpass && setenv("PGPASSWORD", dbpass, 1) != 0)
        goto out;
    const char *missing = !c.listen          ? "--listen"
                          : !c.tls.cert_file ? "--cert"
                          : !c.tls.key_file  ? "--key"
                          : n_ca == 0        ? "--cacert"
                          : !c.issuer        ? "--issuer"
                          : !c.store_url     ? "--store (or --db-host ...)"
                                             : NULL;
    if (missing) {
        fprintf(stderr, "meshtls proxy router: %s is required (see --help)\n", missing);
        goto out;
    }
    if (meshtls_trust_domain_validate(c.issuer, &err) != 0) {
        status = bad("--issuer", c.issuer, err.msg);
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
        int rc = rt_tls_build(&c, &ctx, &na, &err);
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
    int rc = rt_run(&c, &err);
    if (rc)
        cli_print_err("proxy router", &err, rc);
    status = rc ? cli_exit_code(rc) : 0;
out:
    for (size_t i = 0; i < RT_MAX_CA; i++)
        free(ca_copies[i]);
    if (store)
        memset(store, 0, strlen(store));
    if (dbpass)
        memset(dbpass, 0, strlen(dbpass));
    free(store);
    free(dbpass);
    return status;
}

int cmd_router(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "meshtls router: not yet implemented\n");
    return 2;
}
