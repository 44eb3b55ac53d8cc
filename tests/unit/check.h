/*
 * check.h - a 50-line unit test harness (after Valkey's test_help.h and
 * libuv's ASSERT_*).  Each test binary is one ctest entry.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_STR_EQ(s, "a"); CHECK_INT_EQ(rc, 0); }
 *   int main(void) { RUN(name); return check_summary(); }
 */
#ifndef MESHTLS_TEST_CHECK_H
#define MESHTLS_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_tests;
static const char *check_current;

#define TEST(name) static void name(void)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        int before_ = check_failures;                                                              \
        check_current = #name;                                                                     \
        check_tests++;                                                                             \
        name();                                                                                    \
        printf("%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #name);                     \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, check_current,    \
                    #cond);                                                                        \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s: %s == %lld, expected %lld\n", __FILE__, __LINE__,          \
                    check_current, #a, a_, b_);                                                    \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: %s: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__,      \
                    check_current, #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                    \
            check_failures++;                                                                      \
        }                                                                                          \
    } while (0)

static inline int check_summary(void)
{
    printf("%d tests, %d failures\n", check_tests, check_failures);
    return check_failures ? 1 : 0;
}

#endif
