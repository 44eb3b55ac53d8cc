/*
 * test_spiffe.c - SPIFFE ID parsing, trust domains and --allow-uri matching,
 * as data tables (input, expected result, a word the error must contain).
 */
#include <string.h>

#include "check.h"
#include "meshtls/spiffe.h"

struct parse_case {
    const char *in;
    int rc;
    const char *td;     /* expected trust domain on success */
    const char *path;   /* expected path on success */
    const char *errhas; /* substring of the message on failure */
};

static const struct parse_case parse_cases[] = {
    {"spiffe://example.org", 0, "example.org", "", NULL},
    {"spiffe://example.org/svc/api", 0, "example.org", "/svc/api", NULL},
    {"spiffe://a-b_c.9/A.b-C_9/x", 0, "a-b_c.9", "/A.b-C_9/x", NULL},
    {"spiffe://td/ns/prod/sa/billing", 0, "td", "/ns/prod/sa/billing", NULL},
    {"", MESHTLS_EINVAL, NULL, NULL, "empty"},
    {"http://example.org/x", MESHTLS_EINVAL, NULL, NULL, "spiffe://"},
    {"SPIFFE://example.org/x", MESHTLS_EINVAL, NULL, NULL, "lower case"},
    {"spiffe:/example.org", MESHTLS_EINVAL, NULL, NULL, "spiffe://"},
    {"spiffe://", MESHTLS_EINVAL, NULL, NULL, "empty"},
    {"spiffe:///path", MESHTLS_EINVAL, NULL, NULL, "empty"},
    {"spiffe://Example.org/x", MESHTLS_EINVAL, NULL, NULL, "lower case"},
    {"spiffe://example.org:8443/x", MESHTLS_EINVAL, NULL, NULL, "port"},
    {"spiffe://user@example.org/x", MESHTLS_EINVAL, NULL, NULL, "user info"},
    {"spiffe://example.org/x?y=1", MESHTLS_EINVAL, NULL, NULL, "query"},
    {"spiffe://example.org/x#frag", MESHTLS_EINVAL, NULL, NULL, "fragment"},
    {"spiffe://example.org/", MESHTLS_EINVAL, NULL, NULL, "end with"},
    {"spiffe://example.org/a/", MESHTLS_EINVAL, NULL, NULL, "end with"},
    {"spiffe://example.org//a", MESHTLS_EINVAL, NULL, NULL, "empty segment"},
    {"spiffe://example.org/a/./b", MESHTLS_EINVAL, NULL, NULL, "'.'"},
    {"spiffe://example.org/a/../b", MESHTLS_EINVAL, NULL, NULL, "'..'"},
    {"spiffe://example.org/a%20b", MESHTLS_EINVAL, NULL, NULL, "invalid character"},
    {"spiffe://exa mple.org/a", MESHTLS_EINVAL, NULL, NULL, "invalid character"},
    {"spiffe://example.org/a b", MESHTLS_EINVAL, NULL, NULL, "invalid character"},
    {"spiffe://ex%41mple.org", MESHTLS_EINVAL, NULL, NULL, "percent"},
};

TEST(parse_table)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        struct meshtls_spiffe_id id;
        struct meshtls_err err = MESHTLS_ERR_INIT;
        memset(&id, 0x5a, sizeof(id));
        int rc = meshtls_spiffe_parse(c->in, strlen(c->in), &id, &err);
        if (rc != c->rc)
            fprintf(stderr, "  case %zu '%s': rc %d (%s)\n", i, c->in, rc, err.msg);
        CHECK_INT_EQ(rc, c->rc);
        if (c->rc == 0 && rc == 0) {
            CHECK_STR_EQ(id.trust_domain, c->td);
            CHECK_STR_EQ(id.path, c->path);
            char buf[MESHTLS_SPIFFE_ID_MAX + 1];
            CHECK_INT_EQ(meshtls_spiffe_format(&id, buf, sizeof(buf)), 0);
            CHECK_STR_EQ(buf, c->in);
        } else if (rc != 0) {
            CHECK_INT_EQ(err.code, rc);
            if (!strstr(err.msg, c->errhas))
                fprintf(stderr, "  case %zu '%s': message '%s' lacks '%s'\n", i, c->in, err.msg,
                        c->errhas);
            CHECK(strstr(err.msg, c->errhas) != NULL);
        }
    }
}

TEST(length_limits)
{
    static char buf[4096];
    struct meshtls_spiffe_id id;
    /* trust domain of exactly 255 bytes is fine; 256 is not */
    memcpy(buf, "spiffe://", 9);
    memset(buf + 9, 'a', 255);
    buf[9 + 255] = '\0';
    CHECK_INT_EQ(meshtls_spiffe_parse(buf, strlen(buf), &id, NULL), 0);
    buf[9 + 255] = 'a';
    buf[9 + 256] = '\0';
    CHECK_INT_EQ(meshtls_spiffe_parse(buf, strlen(buf), &id, NULL), MESHTLS_EINVAL);
    /* total of 2048 bytes is fine; 2049 is not */
    memcpy(buf, "spiffe://td/", 12);
    memset(buf + 12, 'p', 2048 - 12);
    buf[2048] = '\0';
    CHECK_INT_EQ(meshtls_spiffe_parse(buf, 2048, &id, NULL), 0);
    buf[2048] = 'p';
    buf[2049] = '\0';
    CHECK_INT_EQ(meshtls_spiffe_parse(buf, 2049, &id, NULL), MESHTLS_EINVAL);
    /* embedded NUL */
    CHECK_INT_EQ(meshtls_spiffe_parse("spiffe://td/a\0b", 15, &id, NULL), MESHTLS_EINVAL);
}

TEST(trust_domains)
{
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_trust_domain_validate("example.org", NULL), 0);
    CHECK_INT_EQ(meshtls_trust_domain_validate("prod-1.acme_corp", NULL), 0);
    CHECK_INT_EQ(meshtls_trust_domain_validate("", &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_trust_domain_validate("Example.org", &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "lower case") != NULL);
    CHECK_INT_EQ(meshtls_trust_domain_validate("spiffe://example.org", &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "without spiffe://") != NULL);
    CHECK_INT_EQ(meshtls_trust_domain_validate("example.org:443", &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_trust_domain_validate("a/b", &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_trust_domain_validate(NULL, &err), MESHTLS_EINVAL);
}

struct match_case {
    const char *pattern, *id;
    int want;
};

static const struct match_case match_cases[] = {
    {"spiffe://td/svc/api", "spiffe://td/svc/api", 1},
    {"spiffe://td/svc/api", "spiffe://td/svc/api2", 0},
    {"spiffe://td/svc/*", "spiffe://td/svc/api", 1},
    {"spiffe://td/svc/*", "spiffe://td/svc/api/extra", 0},
    {"spiffe://td/svc/*", "spiffe://td/svc", 0},
    {"spiffe://td/*/api", "spiffe://td/ns/api", 1},
    {"spiffe://td/**", "spiffe://td/a/b/c", 1},
    {"spiffe://td/**", "spiffe://td", 0},
    {"spiffe://td/svc/api", "spiffe://other/svc/api", 0},
    {"spiffe://td", "spiffe://td", 1},
};

TEST(match_table)
{
    for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
        int got = meshtls_spiffe_match(match_cases[i].pattern, match_cases[i].id);
        if (got != match_cases[i].want)
            fprintf(stderr, "  match '%s' ~ '%s' = %d\n", match_cases[i].pattern, match_cases[i].id,
                    got);
        CHECK_INT_EQ(got, match_cases[i].want);
    }
}

int main(void)
{
    RUN(parse_table);
    RUN(length_limits);
    RUN(trust_domains);
    RUN(match_table);
    return check_summary();
}
