/*
 * test_ca_ops.c - the pure decisions behind issue 9's CA operations, as
 * tables: where `ca issue --out` is recorded (absolute, normalised), which
 * certificates `ca rotate` re-issues (window or --force), and how a CRL's
 * nextUpdate stands (fresh, near, stale) for the warnings of `ca crl`,
 * `ca rotate` and `cert check`.
 */
#include <stdint.h>
#include <string.h>

#include "ca.h"
#include "check.h"

TEST(path_absolute_table)
{
    static const struct {
        const char *cwd, *path, *want; /* want NULL: refused */
    } t[] = {
        {"/home/op", "certs", "/home/op/certs"},
        {"/home/op", "./certs", "/home/op/certs"},
        {"/home/op", "./certs/", "/home/op/certs"},
        {"/home/op", "certs//live/.", "/home/op/certs/live"},
        {"/home/op", "../etc/meshtls", "/home/etc/meshtls"},
        {"/home/op", "../../../../x", "/x"},
        {"/home/op", ".", "/home/op"},
        {"/", "certs", "/certs"},
        {"/", ".", "/"},
        {"/home/op", "/etc/meshtls", "/etc/meshtls"},
        {NULL, "/etc//meshtls/", "/etc/meshtls"},
        {"/a/b", "/x/../y", "/y"},
        {NULL, "certs", NULL},       /* relative with no working directory */
        {"relative", "certs", NULL}, /* a working directory must be absolute */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[256] = "";
        int rc = ca_path_absolute(t[i].cwd, t[i].path, out, sizeof(out));
        if (!t[i].want) {
            CHECK_INT_EQ(rc, -1);
            continue;
        }
        CHECK_INT_EQ(rc, 0);
        CHECK_STR_EQ(out, t[i].want);
    }
    char small[8];
    CHECK_INT_EQ(ca_path_absolute("/home/op", "certs", small, sizeof(small)), -1);
}

TEST(rotate_due_table)
{
    const int64_t now = 1700000000, day = 86400;
    static const struct {
        int64_t left; /* seconds from now to notAfter */
        int within, force, want;
    } t[] = {
        {10 * day, 14, 0, 1},
        {14 * day, 14, 0, 1},
        {14 * day + 1, 14, 0, 0},
        {90 * day, 14, 0, 0},
        {90 * day, 14, 1, 1},
        {-1 * day, 14, 0, 1},
        {1, 0, 0, 0},
        {0, 0, 0, 1},
        {3650 * day, 3650, 0, 1},
        {3650 * day + 1, 3650, 1, 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        CHECK_INT_EQ(ca_rotate_due(now + t[i].left, now, t[i].within, t[i].force), t[i].want);
}

TEST(crl_freshness_table)
{
    const int64_t now = 1700000000, day = 86400;
    static const struct {
        int64_t left, warn;
        enum ca_crl_fresh want;
    } t[] = {
        {365 * day, 30 * day, CA_CRL_FRESH}, {30 * day + 1, 30 * day, CA_CRL_FRESH},
        {30 * day, 30 * day, CA_CRL_NEAR},   {1, 30 * day, CA_CRL_NEAR},
        {0, 30 * day, CA_CRL_STALE},         {-1, 30 * day, CA_CRL_STALE},
        {-400 * day, 0, CA_CRL_STALE},       {1, 0, CA_CRL_FRESH},
        {7 * day, 2 * day, CA_CRL_FRESH},    {36 * 3600, 2 * day, CA_CRL_NEAR},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        CHECK_INT_EQ(ca_crl_freshness(now + t[i].left, now, t[i].warn), t[i].want);
}

int main(void)
{
    RUN(path_absolute_table);
    RUN(rotate_due_table);
    RUN(crl_freshness_table);
    return check_summary();
}
