/*
 * test_ca_serve_body.c - the control plane's JSON request bodies as a table
 * (src/ca/serve_body.c): what each route accepts, what it refuses, and that a refusal says
 * what the body must be.
 */
#include <string.h>

#include "check.h"
#include "serve_body.h"

#define CSR "-----BEGIN CERTIFICATE REQUEST-----\\nMIIB\\n-----END CERTIFICATE REQUEST-----\\n"

static const struct {
    enum cp_body_kind kind;
    const char *body;
    int rc;          /* 0, MESHTLS_EPARSE or MESHTLS_EINVAL */
    const char *why; /* a piece of the message on refusal */
} CASES[] = {
    {CP_BODY_SIGN, "{\"token\": \"mtt_x\", \"csr\": \"" CSR "\"}", 0, NULL},
    {CP_BODY_SIGN, "{\"token\": \"mtt_x\"}", MESHTLS_EINVAL, "\"token\": \"mtt_...\""},
    {CP_BODY_SIGN, "{\"token\": 7, \"csr\": \"x\"}", MESHTLS_EINVAL, "\"csr\""},
    {CP_BODY_SIGN, "{\"token\": \"a\", \"token\": \"b\", \"csr\": \"x\"}", MESHTLS_EPARSE,
     "duplicate"},
    {CP_BODY_SIGN, "", MESHTLS_EPARSE, "the request body is empty"},
    {CP_BODY_SIGN, "{\"token\": ", MESHTLS_EPARSE, "not valid JSON"},
    {CP_BODY_RENEW, "{\"csr\": \"" CSR "\"}", 0, NULL},
    {CP_BODY_RENEW, "[\"csr\"]", MESHTLS_EPARSE, "must be a JSON object"},
    {CP_BODY_RENEW, "{\"csr\": null}", MESHTLS_EINVAL, "\"csr\""},
    {CP_BODY_RENEW, "\"csr\"", MESHTLS_EPARSE, "must be a JSON object"},
    {CP_BODY_PEER, "{\"address\": \"10.0.0.1:8443\"}", 0, NULL},
    {CP_BODY_PEER, "{\"address\": \"a b\"}", MESHTLS_EINVAL, "printable"},
    {CP_BODY_PEER, "{\"address\": \"\"}", MESHTLS_EINVAL, "printable"},
    {CP_BODY_PEER, "{\"address\": \"\\u00e9\"}", MESHTLS_EINVAL, "printable"},
    {CP_BODY_PEER, "{}", MESHTLS_EINVAL, "\"address\""},
    {CP_BODY_ADMIN, "{}", 0, NULL},
    {CP_BODY_ADMIN, "{\"reason\": \"keyCompromise\", \"replace\": false}", 0, NULL},
    {CP_BODY_ADMIN, "{\"reason\": \"nope\"}", MESHTLS_EINVAL, "cessationOfOperation"},
    {CP_BODY_ADMIN, "{\"reason\": 3}", MESHTLS_EINVAL, "\"reason\""},
    {CP_BODY_ADMIN, "{\"replace\": \"yes\"}", MESHTLS_EINVAL, "true|false"},
};

TEST(bodies_table)
{
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        json_t *doc = NULL;
        struct cp_body b;
        char why[700] = "";
        int rc = cp_body_parse(CASES[i].kind, CASES[i].body, strlen(CASES[i].body), &doc, &b, why,
                               sizeof(why));
        if (rc != CASES[i].rc)
            fprintf(stderr, "case %zu (%s): rc %d, why %s\n", i, CASES[i].body, rc, why);
        CHECK_INT_EQ(rc, CASES[i].rc);
        if (rc == 0) {
            CHECK(doc != NULL);
            CHECK(CASES[i].kind != CP_BODY_SIGN || (b.token && b.csr));
            CHECK(CASES[i].kind != CP_BODY_RENEW || b.csr);
            CHECK(CASES[i].kind != CP_BODY_PEER || cp_address_valid(b.address));
        } else {
            CHECK(doc == NULL);
            CHECK(strstr(why, CASES[i].why) != NULL);
        }
        json_decref(doc);
    }
}

TEST(admin_fields)
{
    json_t *doc = NULL;
    struct cp_body b;
    char why[700];
    const char *body = "{\"reason\": \"superseded\", \"replace\": false}";
    CHECK_INT_EQ(cp_body_parse(CP_BODY_ADMIN, body, strlen(body), &doc, &b, why, sizeof(why)), 0);
    CHECK_STR_EQ(b.reason, "superseded");
    CHECK_INT_EQ(b.replace, 0);
    json_decref(doc);
    CHECK_INT_EQ(cp_body_parse(CP_BODY_ADMIN, "{}", 2, &doc, &b, why, sizeof(why)), 0);
    CHECK(b.reason == NULL);
    CHECK_INT_EQ(b.replace, -1);
    json_decref(doc);
}

TEST(address_bounds)
{
    char a[CP_ADDRESS_MAX + 2];
    memset(a, 'a', sizeof(a));
    a[CP_ADDRESS_MAX] = '\0';
    CHECK(cp_address_valid(a));
    a[CP_ADDRESS_MAX] = 'a';
    a[CP_ADDRESS_MAX + 1] = '\0';
    CHECK(!cp_address_valid(a));
    CHECK(!cp_address_valid(NULL));
    CHECK(!cp_address_valid("tab\there"));
}

int main(void)
{
    RUN(bodies_table);
    RUN(admin_fields);
    RUN(address_bounds);
    return check_summary();
}
