/*
 * routerbench.c - the router's authorization decision, measured (issue 11 section 7):
 * 100 organisations, 10,000 users, 1,000 teams, 10,000 hosts with 100,000 grants (5 users
 * and 5 teams each), then random lookups of every kind (direct, through a team, forbidden,
 * another organisation's host, unknown), uncached (rt_db_lookup: what a job runs) and from
 * the decision cache (rt_cache_get: what the event loop runs).  Not a test.
 *
 *   routerbench [URL] [LOOKUPS]     URL: sqlite:PATH (default a new file in /tmp) or
 *                                   postgres://... (its tables are emptied first!)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parse.h"
#include "router.h"

#define ORGS 100
#define USERS_PER_ORG 100
#define TEAMS_PER_ORG 10
#define HOSTS_PER_ORG 100

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int pg;

/* An array literal for the backend: {a,b} or ["a","b"]. */
static void arr(char *out, size_t cap, const char *prefix, const int *ids, int n)
{
    size_t at = (size_t)snprintf(out, cap, "%s", pg ? "{" : "[");
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, pg ? "%s%s%d" : "%s\"%s%d\"", i ? "," : "",
                               prefix, ids[i]);
    snprintf(out + at, cap - at, "%s", pg ? "}" : "]");
}

static int populate(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    (void)arg;
    static const char *const wipe[] = {"DELETE FROM backend_hosts", "DELETE FROM teams",
                                       "DELETE FROM users"};
    for (int i = 0; i < 3; i++)
        if (mt_db_exec(c, wipe[i], NULL, 0, NULL, err))
            return MESHTLS_ESTORE;
    char org[32], id[32], a1[512], a2[512];
    srand(7);
    for (int o = 0; o < ORGS; o++) {
        snprintf(org, sizeof(org), "org%d", o);
        for (int u = 0; u < USERS_PER_ORG; u++) {
            snprintf(id, sizeof(id), "u%d", o * USERS_PER_ORG + u);
            struct mt_db_param p[2] = {MT_DB_TEXT(id), MT_DB_TEXT(org)};
            if (mt_db_exec(c, "INSERT INTO users (user_id, org_id) VALUES ($1, $2)", p, 2, NULL,
                           err))
                return MESHTLS_ESTORE;
        }
        for (int t = 0; t < TEAMS_PER_ORG; t++) {
            int m[10];
            for (int k = 0; k < 10; k++)
                m[k] = o * USERS_PER_ORG + rand() % USERS_PER_ORG;
            snprintf(id, sizeof(id), "t%d", o * TEAMS_PER_ORG + t);
            arr(a1, sizeof(a1), "u", m, 10);
            struct mt_db_param p[3] = {MT_DB_TEXT(id), MT_DB_TEXT(org), MT_DB_TEXT(a1)};
            if (mt_db_exec(c,
                           pg ? "INSERT INTO teams (team_id, org_id, user_ids) VALUES ($1, $2, "
                                "$3::text[])"
                              : "INSERT INTO teams (team_id, org_id, user_ids) VALUES ($1, $2, $3)",
                           p, 3, NULL, err))
                return MESHTLS_ESTORE;
        }
        for (int h = 0; h < HOSTS_PER_ORG; h++) {
            int us[5], ts[5];
            for (int k = 0; k < 5; k++) {
                us[k] = o * USERS_PER_ORG + rand() % USERS_PER_ORG;
                ts[k] = o * TEAMS_PER_ORG + rand() % TEAMS_PER_ORG;
            }
            snprintf(id, sizeof(id), "h%d", o * HOSTS_PER_ORG + h);
            arr(a1, sizeof(a1), "u", us, 5);
            arr(a2, sizeof(a2), "t", ts, 5);
            struct mt_db_param p[5] = {MT_DB_TEXT(id), MT_DB_TEXT("10.0.0.1"), MT_DB_TEXT(org),
                                       MT_DB_TEXT(a1), MT_DB_TEXT(a2)};
            if (mt_db_exec(c,
                           pg ? "INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, "
                                "user_ids, team_ids) VALUES ($1, $2, $3, $4::text[], $5::text[])"
                              : "INSERT INTO backend_hosts (connect_id, internal_ip_addr, org_id, "
                                "user_ids, team_ids) VALUES ($1, $2, $3, $4, $5)",
                           p, 5, NULL, err))
                return MESHTLS_ESTORE;
        }
    }
    return 0;
}

static void report(const char *what, int64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof(*ns), cmp64);
    printf("%-34s n=%d p50=%.1f us p90=%.1f us p99=%.1f us max=%.1f us\n", what, n,
           (double)ns[n / 2] / 1e3, (double)ns[n * 9 / 10] / 1e3, (double)ns[n * 99 / 100] / 1e3,
           (double)ns[n - 1] / 1e3);
}

int main(int argc, char **argv)
{
    char path[256];
    snprintf(path, sizeof(path), "sqlite:/tmp/routerbench-%d.db", (int)getpid());
    const char *url = argc > 1 ? argv[1] : path;
    int n = 20000;
    if (argc > 2 && mt_parse_int(argv[2], 100, 10000000, &n) != 0)
        return 2;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct mt_db *db = NULL;
    if (mt_db_open(url, NULL, &db, &err) || rt_db_migrate(db, &err)) {
        fprintf(stderr, "routerbench: %s\n", err.msg);
        return 1;
    }
    pg = mt_db_backend(db) == MT_DB_POSTGRES;
    int64_t t0 = now_ns();
    if (mt_db_tx(db, populate, NULL, &err)) {
        fprintf(stderr, "routerbench: populate: %s\n", err.msg);
        return 1;
    }
    printf("%s: %d orgs, %d users, %d teams, %d hosts, %d grants loaded in %.1f s\n",
           mt_db_backend_name(db), ORGS, ORGS * USERS_PER_ORG, ORGS * TEAMS_PER_ORG,
           ORGS * HOSTS_PER_ORG, ORGS * HOSTS_PER_ORG * 10, (double)(now_ns() - t0) / 1e9);
    int64_t *ns = calloc((size_t)n, sizeof(*ns));
    int codes[RT_CODE_N] = {0};
    struct rt_cache cache;
    rt_cache_init(&cache);
    char cid[32], org[32], user[32];
    for (int i = 0; i < n; i++) {
        int o = rand() % ORGS, kind = rand() % 10;
        int ho = kind == 9 ? (o + 1) % ORGS : o; /* 10 %: another organisation's host */
        snprintf(cid, sizeof(cid), kind == 8 ? "nohost%d" : "h%d",
                 ho * HOSTS_PER_ORG + rand() % HOSTS_PER_ORG);
        snprintf(org, sizeof(org), "org%d", o);
        snprintf(user, sizeof(user), "u%d", o * USERS_PER_ORG + rand() % USERS_PER_ORG);
        struct rt_lookup lk;
        int64_t a = now_ns();
        if (rt_db_lookup(db, cid, org, user, &lk, &err)) {
            fprintf(stderr, "routerbench: lookup: %s\n", err.msg);
            return 1;
        }
        ns[i] = now_ns() - a;
        codes[lk.code]++;
        struct rt_cached cv = {.code = lk.code};
        rt_cache_put(&cache, org, user, cid, 0, rt_cache_gen(&cache), &cv);
    }
    report("uncached decision (rt_db_lookup)", ns, n);
    printf("  verdicts: ok %d, forbidden %d, not-found %d\n", codes[RT_OK], codes[RT_FORBIDDEN],
           codes[RT_NOT_FOUND]);
    /* the same keys again, from the cache */
    srand(7 + 1);
    for (int i = 0; i < n; i++) {
        snprintf(cid, sizeof(cid), "h%d", rand() % (ORGS * HOSTS_PER_ORG));
        snprintf(org, sizeof(org), "org%d", rand() % ORGS);
        snprintf(user, sizeof(user), "u%d", rand() % (ORGS * USERS_PER_ORG));
        struct rt_cached cv;
        int64_t a = now_ns();
        rt_cache_get(&cache, org, user, cid, 0, 1000, &cv);
        ns[i] = now_ns() - a;
    }
    report("cached decision (rt_cache_get)", ns, n);
    rt_cache_free(&cache);
    free(ns);
    mt_db_close(db);
    if (!argc || argc <= 1)
        unlink(path + 7);
    return 0;
}
