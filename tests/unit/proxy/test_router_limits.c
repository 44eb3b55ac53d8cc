/*
 * test_router_limits.c - the router's per-user / per-organisation limits: attempts in the
 * last minute (5 s slots), concurrent sessions, the sweep of idle entries, and the pure parts
 * of sharing them between routers (docs/ROUTER.md "Limits"): the others' sums (their own rows
 * and stale ones left out), what is published (only changes; a resync writes all), the
 * fingerprint of the live routers, and how long the last sums are kept with the database down.
 */
#include <stdlib.h>

#include "check.h"
#include "router.h"

/* One step of a limits script: an attempt or a session at a time, and what it must answer. */
enum op { ATTEMPT, ACQUIRE, RELEASE };
struct step {
    enum op op;
    const char *org, *user;
    int64_t at_ms;
    enum rt_code want;
};

static void play(const struct rt_limit_opts *o, const struct step *s, size_t n,
                 struct rt_lim_others *others)
{
    struct rt_limits l;
    CHECK_INT_EQ(rt_limits_init(&l, o), 0);
    rt_lim_others_free(rt_limits_set_others(&l, others));
    for (size_t i = 0; i < n; i++) {
        enum rt_code got = RT_OK;
        if (s[i].op == ATTEMPT)
            got = rt_limits_attempt(&l, s[i].org, s[i].user, s[i].at_ms);
        else if (s[i].op == ACQUIRE)
            got = rt_limits_acquire(&l, s[i].org, s[i].user);
        else
            rt_limits_release(&l, s[i].org, s[i].user);
        if (got != s[i].want)
            fprintf(stderr, "step %zu (%s/%s at %lld)\n", i, s[i].org, s[i].user,
                    (long long)s[i].at_ms);
        CHECK_INT_EQ(got, s[i].want);
    }
    rt_limits_free(&l);
}

#define T0 1000000 /* a slot boundary: 200 * RT_LIM_SLOT_MS */

TEST(attempts_window)
{
    static const struct step s[] = {
        {ATTEMPT, "acme", "alice", T0, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 100, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 4999, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 4999, RT_RATE_LIMITED}, /* 3 per minute */
        /* another user of the org has its own count, until the org's (5) is used up */
        {ATTEMPT, "acme", "bob", T0 + 5000, RT_OK},
        {ATTEMPT, "acme", "bob", T0 + 5000, RT_OK},
        {ATTEMPT, "acme", "bob", T0 + 5000, RT_RATE_LIMITED},
        {ATTEMPT, "evil", "alice", T0 + 5000, RT_OK}, /* another organisation */
        /* the refusals were not counted; the first three count until their slot leaves the
         * window: 13 slots of 5 s after T0's, so at least 60 s, at most 65 s */
        {ATTEMPT, "acme", "alice", T0 + 60000, RT_RATE_LIMITED},
        {ATTEMPT, "acme", "alice", T0 + 64999, RT_RATE_LIMITED},
        {ATTEMPT, "acme", "alice", T0 + 65000, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 65001, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 65002, RT_OK},
        {ATTEMPT, "acme", "alice", T0 + 65003, RT_RATE_LIMITED},
        /* the organisation's count moved on with alice's: bob's two (T0 + 5000) and her
         * three new ones are its 5 */
        {ATTEMPT, "acme", "carol", T0 + 65003, RT_RATE_LIMITED},
        /* a clock read a little behind (another thread's) counts in the newest slot */
        {ATTEMPT, "evil", "alice", T0 + 65003, RT_OK},
        {ATTEMPT, "evil", "alice", T0 + 64000, RT_OK},
        {ATTEMPT, "evil", "alice", T0 + 69999, RT_RATE_LIMITED}, /* T0 + 5000's still counts */
        {ATTEMPT, "evil", "alice", T0 + 70000, RT_OK},           /* ... until here */
        /* long idle: everything aged out at once */
        {ATTEMPT, "acme", "alice", T0 + 10 * 60000, RT_OK},
    };
    struct rt_limit_opts o = {.user_rate = 3, .org_rate = 5};
    play(&o, s, sizeof(s) / sizeof(s[0]), NULL);
}

TEST(sessions)
{
    static const struct step s[] = {
        {ACQUIRE, "acme", "alice", 0, RT_OK},
        {ACQUIRE, "acme", "alice", 0, RT_OK},
        {ACQUIRE, "acme", "alice", 0, RT_TOO_MANY_SESSIONS},
        {ACQUIRE, "acme", "bob", 0, RT_OK},
        {ACQUIRE, "acme", "carol", 0, RT_TOO_MANY_SESSIONS}, /* the org's 3 are open */
        {RELEASE, "acme", "alice", 0, RT_OK},
        {ACQUIRE, "acme", "carol", 0, RT_OK},
        {ATTEMPT, "acme", "alice", 0, RT_OK},   /* attempts unlimited here */
        {RELEASE, "nobody", "there", 0, RT_OK}, /* a release never goes below 0 */
        {ACQUIRE, "nobody", "there", 0, RT_OK},
    };
    struct rt_limit_opts o = {.user_sessions = 2, .org_sessions = 3};
    play(&o, s, sizeof(s) / sizeof(s[0]), NULL);
}

/* The others' rows as the watcher reads them: what is added, and the sums. */
struct orow {
    const char *router, *org, *user;
    int64_t active, attempts, age_ms;
    int added;
};

static struct rt_lim_others *others_of(const struct orow *r, size_t n, const char *self,
                                       int64_t expire_ms)
{
    struct rt_lim_others *o = rt_lim_others_new();
    CHECK(o != NULL);
    for (size_t i = 0; o && i < n; i++) {
        struct rt_lim_row row;
        memset(&row, 0, sizeof(row));
        snprintf(row.router, sizeof(row.router), "%s", r[i].router);
        snprintf(row.org, sizeof(row.org), "%s", r[i].org);
        snprintf(row.user, sizeof(row.user), "%s", r[i].user);
        row.active = r[i].active;
        row.attempts = r[i].attempts;
        row.age_ms = r[i].age_ms;
        int got = rt_lim_others_add(o, &row, self, expire_ms);
        if (got != r[i].added)
            fprintf(stderr, "row %zu (%s %s/%s)\n", i, r[i].router, r[i].org, r[i].user);
        CHECK_INT_EQ(got, r[i].added);
    }
    return o;
}

TEST(others_sum_and_expiry)
{
    static const struct orow rows[] = {
        {"h1:10:aa", "acme", "alice", 2, 5, 100, 1},
        {"h2:20:bb", "acme", "alice", 1, 3, 1999, 1},
        {"h2:20:bb", "acme", "", 3, 8, 1999, 1}, /* the organisation's row */
        {"h1:10:aa", "acme", "", 2, 5, 100, 1},
        {"me:1:00", "acme", "alice", 7, 7, 0, 0},     /* this router's own: never added */
        {"h3:30:cc", "acme", "alice", 9, 9, 2001, 0}, /* its router silent too long */
        {"h3:30:cc", "acme", "", 9, 9, 60000, 0},
        {"h1:10:aa", "acme", "bob", 0, 0, 0, 0},    /* nothing to add */
        {"h1:10:aa", "acme", "carol", -4, 1, 0, 1}, /* a negative count is no room */
        {"h1:10:aa", "", "", 1, 1, 0, 0},           /* no organisation: not ours */
        {"h2:20:bb", "evil", "alice", 1, 0, 0, 1},
    };
    struct rt_lim_others *o = others_of(rows, sizeof(rows) / sizeof(rows[0]), "me:1:00", 2000);
    static const struct {
        const char *org, *user;
        int64_t active, attempts;
    } want[] = {
        {"acme", "alice", 3, 8}, {"acme", NULL, 5, 13},   {"acme", "bob", 0, 0},
        {"acme", "carol", 0, 1}, {"evil", "alice", 1, 0}, {"evil", NULL, 0, 0},
        {"nope", "alice", 0, 0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int64_t a = -1, t = -1;
        rt_lim_others_get(o, want[i].org, want[i].user, &a, &t);
        CHECK_INT_EQ(a, want[i].active);
        CHECK_INT_EQ(t, want[i].attempts);
    }
    CHECK_INT_EQ(rt_lim_others_routers(o), 2); /* h1 and h2; h3 expired, me is me */
    rt_lim_others_free(o);
    int64_t a = -1, t = -1;
    rt_lim_others_get(NULL, "acme", "alice", &a, &t);
    CHECK(a == 0 && t == 0);
}

TEST(limits_add_the_others)
{
    /* another router has 1 of alice's 2 sessions open and 2 of her 3 attempts, and 2 of the
     * organisation's 3 sessions */
    static const struct orow rows[] = {
        {"other:2:ff", "acme", "alice", 1, 2, 0, 1},
        {"other:2:ff", "acme", "", 2, 2, 0, 1},
    };
    static const struct step s[] = {
        {ATTEMPT, "acme", "alice", T0, RT_OK},
        {ATTEMPT, "acme", "alice", T0, RT_RATE_LIMITED}, /* 1 here + 2 there = 3 */
        {ATTEMPT, "acme", "bob", T0, RT_OK},             /* bob: nothing there */
        {ACQUIRE, "acme", "alice", 0, RT_OK},            /* 0 + 1 < 2 */
        {ACQUIRE, "acme", "alice", 0, RT_TOO_MANY_SESSIONS},
        {ACQUIRE, "acme", "bob", 0, RT_TOO_MANY_SESSIONS}, /* org: 1 here + 2 there */
        {RELEASE, "acme", "alice", 0, RT_OK},
        {ACQUIRE, "acme", "bob", 0, RT_OK},
    };
    struct rt_limit_opts o = {.user_rate = 3, .user_sessions = 2, .org_sessions = 3};
    play(&o, s, sizeof(s) / sizeof(s[0]), others_of(rows, 2, "me", 2000));
}

static size_t changes(struct rt_limits *l, int64_t now, int all, struct rt_lim_row **v)
{
    size_t n = 99;
    CHECK_INT_EQ(rt_limits_changes(l, now, all, v, &n), 0);
    return n;
}

static const struct rt_lim_row *find(const struct rt_lim_row *v, size_t n, const char *org,
                                     const char *user)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].org, org) && !strcmp(v[i].user, user))
            return &v[i];
    return NULL;
}

TEST(publish_changes_only)
{
    struct rt_limits l;
    struct rt_limit_opts o = {.user_rate = 10, .user_sessions = 5};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    struct rt_lim_row *v = NULL;
    CHECK_INT_EQ(changes(&l, T0, 0, &v), 0); /* nothing counted: nothing to write */
    free(v);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", T0), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "alice"), RT_OK);
    size_t n = changes(&l, T0, 0, &v);
    CHECK_INT_EQ(n, 2); /* alice's row and the organisation's */
    const struct rt_lim_row *r = find(v, n, "acme", "alice");
    CHECK(r && r->active == 1 && r->attempts == 1 && !r->router[0]);
    r = find(v, n, "acme", "");
    CHECK(r && r->active == 1 && r->attempts == 1);
    free(v);
    CHECK_INT_EQ(changes(&l, T0 + 1000, 0, &v), 0); /* published: no change */
    free(v);
    /* published counts keep an entry from the sweep until a 0 is published */
    rt_limits_release(&l, "acme", "alice");
    CHECK(rt_limits_sweep(&l, T0 + 70000) > 0);
    n = changes(&l, T0 + 70000, 0, &v); /* the attempt aged out, the session closed */
    CHECK_INT_EQ(n, 2);
    r = find(v, n, "acme", "alice");
    CHECK(r && r->active == 0 && r->attempts == 0); /* 0 and 0: delete the row */
    free(v);
    CHECK_INT_EQ(rt_limits_sweep(&l, T0 + 70000), 0);
    /* a resync writes every count that is not 0, changed or not */
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "bob"), RT_OK);
    free((changes(&l, T0 + 70000, 0, &v), v));
    CHECK_INT_EQ(changes(&l, T0 + 70000, 0, &v), 0);
    free(v);
    rt_limits_unpublish(&l);
    n = changes(&l, T0 + 70000, 1, &v);
    CHECK_INT_EQ(n, 2);
    CHECK(find(v, n, "acme", "bob") != NULL);
    free(v);
    rt_limits_free(&l);
}

TEST(fingerprint)
{
    const uint64_t h0 = 1469598103934665603ULL;
    static const struct {
        const char *a;
        int64_t sa;
        const char *b;
        int64_t sb;
        int same;
    } t[] = {
        {"h1:1:aa", 3, "h1:1:aa", 3, 1},
        {"h1:1:aa", 3, "h1:1:aa", 4, 0}, /* it wrote its counts */
        {"h1:1:aa", 3, "h2:1:aa", 3, 0}, /* another router */
        {"a", 12, "a1", 2, 0},           /* the id's end is part of it */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        CHECK_INT_EQ(rt_lim_fingerprint(h0, t[i].a, t[i].sa) ==
                         rt_lim_fingerprint(h0, t[i].b, t[i].sb),
                     t[i].same);
    /* a router more (or gone) changes it too */
    CHECK(rt_lim_fingerprint(rt_lim_fingerprint(h0, "x", 1), "y", 1) !=
          rt_lim_fingerprint(h0, "x", 1));
}

TEST(keep_others_with_the_database_down)
{
    static const struct {
        int64_t since_ok, keep;
        int want;
    } t[] = {
        {0, 5000, 1}, {4999, 5000, 1}, {5000, 5000, 0}, {60000, 5000, 0}, {-1, 5000, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        CHECK_INT_EQ(rt_lim_keep_others(t[i].since_ok, t[i].keep), t[i].want);
}

TEST(sweep)
{
    struct rt_limits l;
    struct rt_limit_opts o = {.user_rate = 60, .user_sessions = 1};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", 1000), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "alice"), RT_OK);
    CHECK(rt_limits_sweep(&l, 1000) > 0); /* busy: kept */
    rt_limits_release(&l, "acme", "alice");
    CHECK_INT_EQ(rt_limits_sweep(&l, 1000 + 120000), 0); /* idle, window empty: gone */
    rt_limits_free(&l);
}

TEST(off)
{
    struct rt_limits l;
    struct rt_limit_opts o = {0};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    CHECK(!rt_limits_on(&l));
    for (int i = 0; i < 1000; i++)
        CHECK_INT_EQ(rt_limits_attempt(&l, "a", "b", 0), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "a", "b"), RT_OK);
    rt_limits_free(&l);
    CHECK_INT_EQ(rt_limits_attempt(NULL, "a", "b", 0), RT_OK);
    CHECK(!rt_limits_on(NULL));
}

int main(void)
{
    RUN(attempts_window);
    RUN(sessions);
    RUN(others_sum_and_expiry);
    RUN(limits_add_the_others);
    RUN(publish_changes_only);
    RUN(fingerprint);
    RUN(keep_others_with_the_database_down);
    RUN(sweep);
    RUN(off);
    return check_summary();
}
