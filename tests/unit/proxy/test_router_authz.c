/*
 * test_router_authz.c - the router's pure logic as tables: 004's authorization rule,
 * SPIFFE user identities, the connect-id line, array columns, backend addresses.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "router.h"

/* One organisation "acme" with a host, its teams, and a second organisation "evil". */
static const char *const h_users[] = {"alice"};
static const char *const h_teams[] = {"ops", "evilteam", "ghost"};
static const char *const ops_users[] = {"bob", "carol"};
static const char *const dev_users[] = {"dave"}; /* a team of acme the host does not list */
static const char *const evil_users[] = {"mallory", "erin"};
static const struct rt_team teams[] = {
    {"ops", "acme", ops_users, 2},
    {"dev", "acme", dev_users, 1},
    /* listed by the host, but of another organisation: grants nothing */
    {"evilteam", "evil", evil_users, 2},
};
static const struct rt_host host = {"acme", h_users, 1, h_teams, 3};

struct acase {
    const char *name;
    const struct rt_host *host;
    const char *org, *user;
    enum rt_code want;
    const char *via;
};

static const struct acase acases[] = {
    {"listed directly", &host, "acme", "alice", RT_OK, "user"},
    {"through a team the host lists", &host, "acme", "bob", RT_OK, "ops"},
    {"second member of the team", &host, "acme", "carol", RT_OK, "ops"},
    {"in a team the host does not list", &host, "acme", "dave", RT_FORBIDDEN, NULL},
    {"in no list", &host, "acme", "zoe", RT_FORBIDDEN, NULL},
    {"listed team of another organisation", &host, "acme", "mallory", RT_FORBIDDEN, NULL},
    {"another organisation's user named on the host", &host, "evil", "alice", RT_NOT_FOUND, NULL},
    {"another organisation's member of a listed team", &host, "evil", "erin", RT_NOT_FOUND, NULL},
    {"unknown connect id", NULL, "acme", "alice", RT_NOT_FOUND, NULL},
    {"unknown connect id, other org: same answer", NULL, "evil", "alice", RT_NOT_FOUND, NULL},
    {"empty org never matches", &host, "", "alice", RT_NOT_FOUND, NULL},
    {"case matters", &host, "ACME", "alice", RT_NOT_FOUND, NULL},
};

TEST(decide_table)
{
    for (size_t i = 0; i < sizeof(acases) / sizeof(acases[0]); i++) {
        const struct acase *t = &acases[i];
        const char *via = "x";
        enum rt_code got = rt_authz_decide(t->host, teams, 3, t->org, t->user, &via);
        if (got != t->want || (t->via ? !via || strcmp(via, t->via) : via != NULL))
            fprintf(stderr, "case '%s': got %s via %s\n", t->name, rt_code_name(got),
                    via ? via : "-");
        CHECK_INT_EQ(got, t->want);
    }
}

TEST(team_host_org_mismatch)
{
    /* a host with no teams at all and empty lists */
    struct rt_host h = {"acme", NULL, 0, NULL, 0};
    CHECK_INT_EQ(rt_authz_decide(&h, teams, 3, "acme", "bob", NULL), RT_FORBIDDEN);
    /* an "acme" team listed by an "evil" host: the evil org's members only count */
    static const char *const t1[] = {"ops"};
    struct rt_host eh = {"evil", NULL, 0, t1, 1};
    CHECK_INT_EQ(rt_authz_decide(&eh, teams, 3, "evil", "bob", NULL), RT_FORBIDDEN);
    CHECK_INT_EQ(rt_authz_decide(&eh, teams, 3, "acme", "bob", NULL), RT_NOT_FOUND);
}

struct icase {
    const char *id;
    int ok;
    const char *org, *user;
};

static const struct icase icases[] = {
    {"spiffe://example.com/orgs/acme/users/alice", 1, "acme", "alice"},
    {"spiffe://example.com/orgs/o-1.2_3/users/u-9", 1, "o-1.2_3", "u-9"},
    {"spiffe://other.com/orgs/acme/users/alice", 0, NULL, NULL},
    {"spiffe://example.com/svc/api", 0, NULL, NULL},
    {"spiffe://example.com/orgs/acme/services/alice", 0, NULL, NULL},
    {"spiffe://example.com/orgs/acme/users/alice/extra", 0, NULL, NULL},
    {"spiffe://example.com/orgs//users/alice", 0, NULL, NULL},
    {"spiffe://example.com/orgs/acme/users/", 0, NULL, NULL},
    {"spiffe://example.com/orgs/acme/users", 0, NULL, NULL},
    {"spiffe://example.com/orgs/acme", 0, NULL, NULL},
    {"spiffe://example.com/orgs/a%20b/users/alice", 0, NULL, NULL},
    {"spiffe://example.com/orgs/../users/alice", 0, NULL, NULL},
    {"spiffe://EXAMPLE.com/orgs/acme/users/alice", 0, NULL, NULL},
    {"https://example.com/orgs/acme/users/alice", 0, NULL, NULL},
    {"", 0, NULL, NULL},
    {NULL, 0, NULL, NULL},
};

TEST(identity_table)
{
    for (size_t i = 0; i < sizeof(icases) / sizeof(icases[0]); i++) {
        char org[RT_ID_MAX + 1] = "", user[RT_ID_MAX + 1] = "";
        struct meshtls_err e = MESHTLS_ERR_INIT;
        int rc = rt_identity_parse(icases[i].id, "example.com", org, user, &e);
        if ((rc == 0) != icases[i].ok)
            fprintf(stderr, "identity '%s': rc %d (%s)\n", icases[i].id ? icases[i].id : "NULL", rc,
                    e.msg);
        CHECK_INT_EQ(rc == 0, icases[i].ok);
        if (icases[i].ok) {
            CHECK_STR_EQ(org, icases[i].org);
            CHECK_STR_EQ(user, icases[i].user);
        } else {
            CHECK(e.msg[0] != '\0');
        }
    }
    /* a segment at the bound, and one past it */
    char id[400], org[RT_ID_MAX + 1], user[RT_ID_MAX + 1];
    char seg[RT_ID_MAX + 2];
    memset(seg, 'a', RT_ID_MAX);
    seg[RT_ID_MAX] = '\0';
    snprintf(id, sizeof(id), "spiffe://example.com/orgs/%s/users/u", seg);
    CHECK_INT_EQ(rt_identity_parse(id, "example.com", org, user, NULL), 0);
    seg[RT_ID_MAX] = 'a', seg[RT_ID_MAX + 1] = '\0';
    snprintf(id, sizeof(id), "spiffe://example.com/orgs/%s/users/u", seg);
    CHECK(rt_identity_parse(id, "example.com", org, user, NULL) != 0);
}

struct lcase {
    const char *line;
    size_t n;
    enum rt_code want;
    const char *id;
};

#define L(s) s, sizeof(s) - 1

static const struct lcase lcases[] = {
    {L("web-01"), RT_OK, "web-01"},
    {L("host.example:22@a+b~c_d"), RT_OK, "host.example:22@a+b~c_d"},
    {L("web-01\r"), RT_OK, "web-01"}, /* CRLF: the CR is dropped */
    {L(""), RT_BAD_REQUEST, NULL},
    {L("\r"), RT_BAD_REQUEST, NULL},
    {L("web 01"), RT_BAD_REQUEST, NULL},
    {L("web'; DROP TABLE backend_hosts; --"), RT_BAD_REQUEST, NULL},
    {L("x\"y"), RT_BAD_REQUEST, NULL},
    {L("h\xc3\xa9te"), RT_BAD_REQUEST, NULL}, /* UTF-8 */
    {L("a\0b"), RT_BAD_REQUEST, NULL},
    {L("a\tb"), RT_BAD_REQUEST, NULL},
    {L("a\r\r"), RT_BAD_REQUEST, NULL},
    {L("a/b"), RT_BAD_REQUEST, NULL},
    {L("%41"), RT_BAD_REQUEST, NULL},
};

TEST(line_table)
{
    for (size_t i = 0; i < sizeof(lcases) / sizeof(lcases[0]); i++) {
        char out[RT_CONNECT_ID_MAX + 1] = "";
        enum rt_code got = rt_connect_id_check(lcases[i].line, lcases[i].n, out);
        CHECK_INT_EQ(got, lcases[i].want);
        if (lcases[i].id)
            CHECK_STR_EQ(out, lcases[i].id);
    }
    char big[RT_CONNECT_ID_MAX + 2], out[RT_CONNECT_ID_MAX + 1];
    memset(big, 'a', sizeof(big));
    CHECK_INT_EQ(rt_connect_id_check(big, RT_CONNECT_ID_MAX, out), RT_OK);
    CHECK_INT_EQ(rt_connect_id_check(big, RT_CONNECT_ID_MAX + 1, out), RT_BAD_REQUEST);
}

struct arcase {
    const char *text;
    int rc;
    size_t n;
    const char *e0, *e1;
};

static const struct arcase arcases[] = {
    {"{}", 0, 0, NULL, NULL},
    {"[]", 0, 0, NULL, NULL},
    {"{alice,bob}", 0, 2, "alice", "bob"},
    {"{\"a b\",\"c\\\"d\"}", 0, 2, "a b", "c\"d"},
    {"{NULL,x}", 0, 1, "x", NULL},
    {"{\"NULL\"}", 0, 1, "NULL", NULL},
    {"[\"alice\", \"bob\"]", 0, 2, "alice", "bob"},
    {"[\"a\\\\b\"]", 0, 1, "a\\b", NULL},
    {"[null, \"x\"]", 0, 1, "x", NULL},
    {"[1]", MESHTLS_EINVAL, 0, NULL, NULL},
    {"alice", MESHTLS_EINVAL, 0, NULL, NULL},
    {"{\"unterminated}", MESHTLS_EINVAL, 0, NULL, NULL},
    {"[\"a\" \"b\"]", MESHTLS_EINVAL, 0, NULL, NULL},
    {"", MESHTLS_EINVAL, 0, NULL, NULL},
};

TEST(array_table)
{
    for (size_t i = 0; i < sizeof(arcases) / sizeof(arcases[0]); i++) {
        char **v = NULL;
        size_t n = 99;
        int rc = rt_array_parse(arcases[i].text, &v, &n);
        if (rc != arcases[i].rc)
            fprintf(stderr, "array '%s': rc %d\n", arcases[i].text, rc);
        CHECK_INT_EQ(rc, arcases[i].rc);
        CHECK_INT_EQ(n, arcases[i].n);
        if (arcases[i].e0 && n > 0)
            CHECK_STR_EQ(v[0], arcases[i].e0);
        if (arcases[i].e1 && n > 1)
            CHECK_STR_EQ(v[1], arcases[i].e1);
        rt_strv_free(v, n);
    }
}

struct bcase {
    const char *in;
    int ok;
    const char *out;
};

static const struct bcase bcases[] = {
    {"10.0.0.5", 1, "10.0.0.5:22"},
    {"10.0.0.5:2222", 1, "10.0.0.5:2222"},
    {"[fd00::5]:2200", 1, "[fd00::5]:2200"},
    {"[fd00::5]", 1, "[fd00::5]:22"},
    {"fd00::5", 1, "[fd00::5]:22"},
    {"db.internal", 1, "db.internal:22"},
    {"db.internal:80", 1, "db.internal:80"},
    {"", 0, NULL},
    {":22", 0, NULL},
    {"10.0.0.5:0", 0, NULL},
    {"10.0.0.5:99999", 0, NULL},
    {"10.0.0.5:ssh", 0, NULL},
    {"a b", 0, NULL},
    {"[fd00::5]x", 0, NULL},
};

TEST(backend_table)
{
    for (size_t i = 0; i < sizeof(bcases) / sizeof(bcases[0]); i++) {
        char out[300] = "";
        int rc = rt_backend_addr(bcases[i].in, out, sizeof(out));
        CHECK_INT_EQ(rc == 0, bcases[i].ok);
        if (bcases[i].ok)
            CHECK_STR_EQ(out, bcases[i].out);
    }
}

TEST(codes)
{
    for (int c = 1; c < RT_CODE_N; c++) {
        const char *l = rt_code_line((enum rt_code)c);
        CHECK(!strncmp(l, "ERROR: ", 7));
        CHECK(
            !strncmp(l + 7, rt_code_name((enum rt_code)c), strlen(rt_code_name((enum rt_code)c))));
        CHECK(l[strlen(l) - 1] == '\n');
    }
    CHECK_STR_EQ(rt_code_line(RT_OK), "OK\n");
    /* docs/ROUTER.md's table, for the one code answered after a completed handshake */
    CHECK_STR_EQ(rt_code_name(RT_REVOKED), "revoked");
    CHECK_STR_EQ(rt_code_line(RT_REVOKED),
                 "ERROR: revoked the client certificate has been revoked; ask for a new one\n");
}

int main(void)
{
    RUN(decide_table);
    RUN(team_host_org_mismatch);
    RUN(identity_table);
    RUN(line_table);
    RUN(array_table);
    RUN(backend_table);
    RUN(codes);
    return check_summary();
}
