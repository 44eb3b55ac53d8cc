/*
 * fuzz_ca_ocsp.c - the OCSP responder of `meshtls ca serve` (src/ca/serve_ocsp.c) answering
 * arbitrary bytes as a DER OCSP request.  It must never crash and always produce a DER
 * OCSP response (successful, malformedRequest or internalError).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "serve_ocsp.h"
#include "x509gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cp_ocsp responder;
static int ready;

static int lookup(void *arg, const char *serial, int *status, int64_t *revoked_at, int *reason)
{
    (void)arg;
    size_t n = strlen(serial);
    if (n % 3 == 0)
        return -1; /* the store failed */
    *status = n % 3 == 1 ? V_OCSP_CERTSTATUS_GOOD : V_OCSP_CERTSTATUS_REVOKED;
    *revoked_at = 1700000000;
    *reason = (int)(n % 7) - 1;
    return 0;
}

static void setup(void)
{
    EVP_PKEY *k = NULL;
    X509 *ca = NULL;
    struct mt_cert_spec spec = {.cn = "fuzz CA", .is_ca = 1, .pathlen = 0, .days = 30};
    if (mt_key_generate(MT_KEY_EC_P256, &k, NULL) || mt_cert_sign(&spec, k, NULL, k, &ca, NULL) ||
        cp_ocsp_init(ca, k, 30, &responder, NULL))
        abort();
    X509_free(ca);
    EVP_PKEY_free(k);
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    unsigned char *out = NULL;
    size_t n = 0;
    if (cp_ocsp_respond(&responder, data, size, lookup, NULL, 1800000000, &out, &n, NULL) != 0)
        return 0;
    const unsigned char *p = out;
    OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)n);
    if (!r)
        abort();
    OCSP_RESPONSE_free(r);
    OPENSSL_free(out);
    ERR_clear_error();
    return 0;
}
