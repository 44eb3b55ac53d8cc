/*
 * test_router_cache.c - what invalidation relies on (docs/ROUTER.md "Invalidation"): the
 * decision cache's ages and its generation (a lookup that raced a clear does not put its old
 * answer back), as a table of steps; and rt_crl_revoked, the check a live relay runs after a
 * CRL reload, against certificates and a CRL made here.
 */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "router.h"

enum op { PUT, PUT_OLD_GEN, CLEAR, GET };

/* One step: PUT stores `code` at `t` with the current generation; PUT_OLD_GEN with the one
 * read before the last CLEAR (a racing lookup); GET expects `code` (RT_OK..) or -1 (miss)
 * at `t` with max age `age`. */
static const struct {
    enum op op;
    const char *cid;
    int64_t t, age;
    int code;
} STEPS[] = {
    {GET, "web", 0, 500, -1},
    {PUT, "web", 1000, 0, RT_OK},
    {GET, "web", 1400, 500, RT_OK},
    {GET, "web", 1501, 500, -1},          /* older than the fresh age */
    {GET, "web", 20000, 30000, RT_OK},    /* still within the stale age */
    {GET, "db", 1400, 500, -1},           /* another connect id */
    {CLEAR, NULL, 0, 0, 0},               /* the data changed */
    {GET, "web", 1400, 500, -1},          /* gone */
    {PUT_OLD_GEN, "web", 1500, 0, RT_OK}, /* read before the change: dropped */
    {GET, "web", 1600, 30000, -1},
    {PUT, "web", 1700, 0, RT_FORBIDDEN}, /* read after it: kept */
    {GET, "web", 1800, 500, RT_FORBIDDEN},
};

TEST(cache_generation)
{
    struct rt_cache c;
    CHECK_INT_EQ(rt_cache_init(&c), 0);
    uint64_t before_clear = rt_cache_gen(&c);
    for (size_t i = 0; i < sizeof(STEPS) / sizeof(STEPS[0]); i++) {
        struct rt_cached v = {.code = (enum rt_code)STEPS[i].code};
        struct rt_cached got = {.code = RT_CODE_N};
        switch (STEPS[i].op) {
        case PUT:
            rt_cache_put(&c, "acme", "alice", STEPS[i].cid, STEPS[i].t, rt_cache_gen(&c), &v);
            break;
        case PUT_OLD_GEN:
            rt_cache_put(&c, "acme", "alice", STEPS[i].cid, STEPS[i].t, before_clear, &v);
            break;
        case CLEAR:
            before_clear = rt_cache_gen(&c);
            rt_cache_clear(&c);
            CHECK(rt_cache_gen(&c) != before_clear);
            break;
        case GET: {
            int hit =
                rt_cache_get(&c, "acme", "alice", STEPS[i].cid, STEPS[i].t, STEPS[i].age, &got);
            if (STEPS[i].code < 0) {
                if (hit)
                    fprintf(stderr, "step %zu: unexpected hit\n", i);
                CHECK(!hit);
            } else {
                if (!hit || (int)got.code != STEPS[i].code)
                    fprintf(stderr, "step %zu: hit %d code %d\n", i, hit, (int)got.code);
                CHECK(hit && (int)got.code == STEPS[i].code);
            }
            break;
        }
        }
    }
    rt_cache_free(&c);
}

/* ---- rt_crl_revoked ------------------------------------------------------------------------ */

static X509 *make_cert(const char *cn, const char *issuer_cn, long serial, EVP_PKEY *key)
{
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_NAME_add_entry_by_txt(X509_get_issuer_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)issuer_cn, -1, -1, 0);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_sign(x, key, EVP_sha256());
    return x;
}

static X509_CRL *make_crl(const char *issuer_cn, const long *serials, size_t n, EVP_PKEY *key)
{
    X509_CRL *crl = X509_CRL_new();
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)issuer_cn, -1, -1,
                               0);
    X509_CRL_set_issuer_name(crl, name);
    X509_NAME_free(name);
    ASN1_TIME *now = X509_gmtime_adj(NULL, 0);
    X509_CRL_set1_lastUpdate(crl, now);
    ASN1_TIME_free(now);
    for (size_t i = 0; i < n; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *sn = ASN1_INTEGER_new();
        ASN1_INTEGER_set(sn, serials[i]);
        X509_REVOKED_set_serialNumber(r, sn);
        ASN1_INTEGER_free(sn);
        ASN1_TIME *t = X509_gmtime_adj(NULL, 0);
        X509_REVOKED_set_revocationDate(r, t);
        ASN1_TIME_free(t);
        X509_CRL_add0_revoked(crl, r);
    }
    X509_CRL_sort(crl);
    X509_CRL_sign(crl, key, EVP_sha256());
    return crl;
}

static const struct {
    const char *issuer;
    long serial;
    int revoked;
    const char *hex;
} CERTS[] = {
    {"Users CA", 0x1234, 1, "1234"}, /* listed */
    {"Users CA", 0x1235, 0, ""},     /* another serial */
    {"Other CA", 0x1234, 0, ""},     /* the same serial from another issuer */
};

TEST(crl_revoked)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    CHECK(key != NULL);
    if (!key)
        return;
    static const long listed[] = {0x99, 0x1234};
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    sk_X509_CRL_push(crls, make_crl("Users CA", listed, 2, key));
    for (size_t i = 0; i < sizeof(CERTS) / sizeof(CERTS[0]); i++) {
        X509 *x = make_cert("alice", CERTS[i].issuer, CERTS[i].serial, key);
        char hex[80] = "";
        CHECK_INT_EQ(rt_crl_revoked(crls, x, hex, sizeof(hex)), CERTS[i].revoked);
        CHECK_STR_EQ(hex, CERTS[i].hex);
        CHECK_INT_EQ(rt_crl_revoked(NULL, x, NULL, 0), 0); /* no --crl */
        X509_free(x);
    }
    CHECK_INT_EQ(rt_crl_revoked(crls, NULL, NULL, 0), 0);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    EVP_PKEY_free(key);
}

int main(void)
{
    RUN(cache_generation);
    RUN(crl_revoked);
    return check_summary();
}
