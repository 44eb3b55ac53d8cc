/*
 * test_router_limits_db.c - the SQL of limits shared between routers (migration 5,
 * router_db.c) on a real SQLite file: two routers' counts summed for a third, a router's own
 * rows left out, changes and deletions, the fingerprint that says when to read again, a
 * router whose heartbeat is older than the expiry no longer counted, the clean-up of dead
 * routers and a clean stop.  PostgreSQL runs the same statements in
 * tests/integration/test_router_limits.py.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "router.h"

static struct rt_lim_row row(const char *org, const char *user, int64_t active, int64_t attempts)
{
    struct rt_lim_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.org, sizeof(r.org), "%s", org);
    snprintf(r.user, sizeof(r.user), "%s", user);
    r.active = active;
    r.attempts = attempts;
    return r;
}

/* What `self` reads of the others, as (org, user) -> active, attempts. */
struct want {
    const char *org, *user;
    int64_t active, attempts;
};

static void read_as(struct mt_db_conn *c, const char *self, const struct want *w, size_t n)
{
    struct rt_lim_others *o = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(rt_db_lim_read(c, self, RT_LIM_EXPIRE_MS, &o, &e), 0);
    for (size_t i = 0; o && i < n; i++) {
        int64_t a = -1, t = -1;
        rt_lim_others_get(o, w[i].org, w[i].user, &a, &t);
        if (a != w[i].active || t != w[i].attempts)
            fprintf(stderr, "as %s: %s/%s is %lld, %lld\n", self, w[i].org,
                    w[i].user ? w[i].user : "(org)", (long long)a, (long long)t);
        CHECK_INT_EQ(a, w[i].active);
        CHECK_INT_EQ(t, w[i].attempts);
    }
    rt_lim_others_free(o);
}

static int64_t count(struct mt_db_conn *c, const char *sql)
{
    struct mt_db_rows *r = NULL;
    int64_t n = -1;
    if (mt_db_query(c, sql, NULL, 0, &r, NULL) == 0 && mt_db_row_next(r, NULL) == 1)
        n = mt_db_col_int64(r, 0);
    mt_db_rows_close(r);
    return n;
}

TEST(sqlite_round_trip)
{
    char dir[] = "/tmp/meshtls-limits-XXXXXX", url[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(url, sizeof(url), "sqlite:%s/r.db", dir);
    struct mt_db *db = NULL;
    struct mt_db_conn *c = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_db_open(url, NULL, &db, &e), 0);
    CHECK_INT_EQ(rt_db_migrate(db, &e), 0);
    CHECK_INT_EQ(mt_db_acquire(db, &c, &e), 0);

    /* r1 and r2 publish (a resync: their first round) */
    struct rt_lim_row r1[] = {row("acme", "alice", 2, 3), row("acme", "", 2, 4)};
    struct rt_lim_row r2[] = {row("acme", "alice", 1, 1), row("acme", "", 1, 1),
                              row("evil", "mallory", 0, 5), row("evil", "", 0, 5)};
    CHECK_INT_EQ(rt_db_lim_publish(c, "r1", 1, r1, 2, 1, &e), 0);
    CHECK_INT_EQ(rt_db_lim_publish(c, "r2", 1, r2, 4, 1, &e), 0);
    uint64_t fp = 0, fp2 = 0;
    size_t live = 0;
    CHECK_INT_EQ(rt_db_lim_instances(c, "me", RT_LIM_EXPIRE_MS, &fp, &live, &e), 0);
    CHECK_INT_EQ(live, 2);
    static const struct want all[] = {
        {"acme", "alice", 3, 4}, {"acme", NULL, 3, 5},  {"evil", "mallory", 0, 5},
        {"evil", NULL, 0, 5},    {"acme", "bob", 0, 0},
    };
    read_as(c, "me", all, sizeof(all) / sizeof(all[0]));
    /* a router never adds its own rows */
    static const struct want for_r1[] = {{"acme", "alice", 1, 1}, {"acme", NULL, 1, 1}};
    read_as(c, "r1", for_r1, 2);

    /* a heartbeat alone (nothing changed): the fingerprint stays, no read needed */
    CHECK_INT_EQ(rt_db_lim_publish(c, "r1", 1, NULL, 0, 0, &e), 0);
    CHECK_INT_EQ(rt_db_lim_instances(c, "me", RT_LIM_EXPIRE_MS, &fp2, &live, &e), 0);
    CHECK(fp2 == fp);
    /* a change: alice's sessions on r1 closed (0, 0 deletes the row), the org's updated */
    struct rt_lim_row ch[] = {row("acme", "alice", 0, 0), row("acme", "", 0, 1)};
    CHECK_INT_EQ(rt_db_lim_publish(c, "r1", 2, ch, 2, 0, &e), 0);
    CHECK_INT_EQ(rt_db_lim_instances(c, "me", RT_LIM_EXPIRE_MS, &fp2, &live, &e), 0);
    CHECK(fp2 != fp);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_counts WHERE router_id = 'r1'"), 1);
    static const struct want changed[] = {{"acme", "alice", 1, 1}, {"acme", NULL, 1, 2}};
    read_as(c, "me", changed, 2);

    /* r2 goes silent past the expiry (its heartbeat 5 s old by the database's clock) */
    CHECK_INT_EQ(mt_db_exec(c,
                            "UPDATE router_limit_instances SET updated_at_ms = updated_at_ms - "
                            "5000 WHERE router_id = 'r2'",
                            NULL, 0, NULL, &e),
                 0);
    CHECK_INT_EQ(rt_db_lim_instances(c, "me", RT_LIM_EXPIRE_MS, &fp2, &live, &e), 0);
    CHECK_INT_EQ(live, 1);
    static const struct want expired[] = {
        {"acme", "alice", 0, 0}, {"acme", NULL, 0, 1}, {"evil", "mallory", 0, 0}};
    read_as(c, "me", expired, 3);
    /* the clean-up deletes routers silent longer than asked, rows and heartbeat */
    CHECK_INT_EQ(rt_db_lim_forget(c, NULL, 60000, &e), 0);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_counts WHERE router_id = 'r2'"), 4);
    CHECK_INT_EQ(rt_db_lim_forget(c, NULL, 4000, &e), 0);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_counts WHERE router_id = 'r2'"), 0);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_instances"), 1);

    /* a resync replaces everything r1 had */
    struct rt_lim_row rs[] = {row("acme", "bob", 1, 0)};
    CHECK_INT_EQ(rt_db_lim_publish(c, "r1", 3, rs, 1, 1, &e), 0);
    static const struct want resynced[] = {{"acme", "bob", 1, 0}, {"acme", NULL, 0, 0}};
    read_as(c, "me", resynced, 2);
    /* a clean stop takes r1's rows with it */
    CHECK_INT_EQ(rt_db_lim_forget(c, "r1", 0, &e), 0);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_counts"), 0);
    CHECK_INT_EQ(count(c, "SELECT COUNT(*) FROM router_limit_instances"), 0);
    CHECK_STR_EQ(e.msg, ""); /* no call above failed */

    mt_db_release(c);
    mt_db_close(db);
    char path[160];
    snprintf(path, sizeof(path), "%s/r.db", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    RUN(sqlite_round_trip);
    return check_summary();
}
