/*
 * test_parse.c - src/lib/parse.c as tables: what becomes a number, what is refused.
 */
#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "meshtls/err.h"
#include "parse.h"

static const struct {
    const char *in;
    int64_t min, max;
    int rc;
    int64_t want;
} ints[] = {
    {"0", 0, 10, 0, 0},
    {"10", 0, 10, 0, 10},
    {"-5", -10, 10, 0, -5},
    {"11", 0, 10, MESHTLS_EINVAL, 0},
    {"-1", 0, 10, MESHTLS_EINVAL, 0},
    {"", 0, 10, MESHTLS_EINVAL, 0},
    {" 1", 0, 10, MESHTLS_EINVAL, 0},
    {"+1", 0, 10, MESHTLS_EINVAL, 0},
    {"1 ", 0, 10, MESHTLS_EINVAL, 0},
    {"1x", 0, 10, MESHTLS_EINVAL, 0},
    {"0x10", 0, 100, MESHTLS_EINVAL, 0},
    {"-", -10, 10, MESHTLS_EINVAL, 0},
    {"--1", -10, 10, MESHTLS_EINVAL, 0},
    {"9223372036854775807", 0, INT64_MAX, 0, INT64_MAX},
    {"9223372036854775808", 0, INT64_MAX, MESHTLS_EINVAL, 0},
    {"-9223372036854775809", INT64_MIN, 0, MESHTLS_EINVAL, 0},
};

static const struct {
    const char *in;
    int64_t max;
    int rc;
    int64_t want;
} durs[] = {
    {"500ms", 1000000, 0, 500},
    {"10s", 1000000, 0, 10000},
    {"10", 1000000, 0, 10000},
    {"5m", 1000000, 0, 300000},
    {"1h", 3600000, 0, 3600000},
    {"2h", 3600000, MESHTLS_EINVAL, 0},
    {"1d", 1000000, MESHTLS_EINVAL, 0},
    {"s", 1000000, MESHTLS_EINVAL, 0},
    {"-1s", 1000000, MESHTLS_EINVAL, 0},
    {"1.5s", 1000000, MESHTLS_EINVAL, 0},
    {"99999999999999999999h", INT64_MAX, MESHTLS_EINVAL, 0},
    {"2562047788016h", INT64_MAX, MESHTLS_EINVAL, 0},
    {"2562047788015h", INT64_MAX, 0, 2562047788015LL * 3600000},
    {"", 1000, MESHTLS_EINVAL, 0},
};

TEST(integers)
{
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int64_t v = 42;
        int rc = mt_parse_i64(ints[i].in, ints[i].min, ints[i].max, &v);
        if (rc != ints[i].rc)
            fprintf(stderr, "  case '%s': rc=%d\n", ints[i].in, rc);
        CHECK_INT_EQ(rc, ints[i].rc);
        CHECK(v == (rc == 0 ? ints[i].want : 42)); /* untouched on error */
    }
    int x = 7;
    CHECK_INT_EQ(mt_parse_int("2147483648", 0, 2147483647, &x), MESHTLS_EINVAL);
    CHECK_INT_EQ(x, 7);
    CHECK_INT_EQ(mt_parse_i64(NULL, 0, 1, NULL), MESHTLS_EINVAL);
}

TEST(durations)
{
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        int64_t v = 42;
        int rc = mt_parse_duration_ms(durs[i].in, durs[i].max, &v);
        if (rc != durs[i].rc)
            fprintf(stderr, "  case '%s': rc=%d\n", durs[i].in, rc);
        CHECK_INT_EQ(rc, durs[i].rc);
        CHECK(v == (rc == 0 ? durs[i].want : 42));
    }
}

int main(void)
{
    RUN(integers);
    RUN(durations);
    return check_summary();
}
