/*
 * test_router_limits.c - the router's per-user / per-organisation limits: attempt token
 * buckets (refill over time), concurrent sessions, and the sweep of idle entries.
 */
#include "check.h"
#include "router.h"

TEST(attempts_refill)
{
    struct rt_limits l;
    struct rt_limit_opts o = {.user_rate = 3, .org_rate = 5};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++)
        CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", t), RT_OK);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", t), RT_RATE_LIMITED);
    /* another user of the org still has its own bucket, until the org's runs out */
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "bob", t), RT_OK);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "bob", t), RT_OK);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "bob", t), RT_RATE_LIMITED); /* org: 5 used */
    CHECK_INT_EQ(rt_limits_attempt(&l, "evil", "alice", t), RT_OK);         /* other org */
    /* 3 per minute: one token back every 20 s */
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", t + 19000), RT_RATE_LIMITED);
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", t + 61000), RT_OK);
    rt_limits_free(&l);
}

TEST(sessions)
{
    struct rt_limits l;
    struct rt_limit_opts o = {.user_sessions = 2, .org_sessions = 3};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "alice"), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "alice"), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "alice"), RT_TOO_MANY_SESSIONS);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "bob"), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "carol"), RT_TOO_MANY_SESSIONS); /* org full */
    rt_limits_release(&l, "acme", "alice");
    CHECK_INT_EQ(rt_limits_acquire(&l, "acme", "carol"), RT_OK);
    /* attempts unlimited here */
    CHECK_INT_EQ(rt_limits_attempt(&l, "acme", "alice", 0), RT_OK);
    rt_limits_free(&l);
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
    CHECK_INT_EQ(rt_limits_sweep(&l, 1000 + 120000), 0); /* idle and refilled: gone */
    rt_limits_free(&l);
}

TEST(off)
{
    struct rt_limits l;
    struct rt_limit_opts o = {0};
    CHECK_INT_EQ(rt_limits_init(&l, &o), 0);
    for (int i = 0; i < 1000; i++)
        CHECK_INT_EQ(rt_limits_attempt(&l, "a", "b", 0), RT_OK);
    CHECK_INT_EQ(rt_limits_acquire(&l, "a", "b"), RT_OK);
    rt_limits_free(&l);
    CHECK_INT_EQ(rt_limits_attempt(NULL, "a", "b", 0), RT_OK);
}

int main(void)
{
    RUN(attempts_refill);
    RUN(sessions);
    RUN(sweep);
    RUN(off);
    return check_summary();
}
