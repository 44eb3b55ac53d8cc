/*
 * fuzz_ca_body.c - the JSON bodies `meshtls ca serve` parses (src/ca/serve_body.c): the
 * first byte picks the route (sign, renew, peer, admin revoke), the rest is the body.  Must
 * never crash or leak; a body that parses has the route's fields in their forms, and one
 * that does not says why.  What a handler does next without a server (token format check,
 * CSR parse) runs on the fields too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "ca.h"
#include "serve.h"
#include "serve_body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum cp_body_kind kind = (enum cp_body_kind)(CP_BODY_SIGN + data[0] % 4);
    json_t *doc = NULL;
    struct cp_body b;
    char why[700];
    why[0] = '\0';
    int rc = cp_body_parse(kind, (const char *)data + 1, size - 1, &doc, &b, why, sizeof(why));
    if (rc != 0) {
        if (doc || why[0] == '\0' || (rc != MESHTLS_EPARSE && rc != MESHTLS_EINVAL))
            abort(); /* a refusal leaves nothing behind and always says why */
        return 0;
    }
    if (!doc)
        abort();
    switch (kind) {
    case CP_BODY_SIGN:
    case CP_BODY_RENEW:
        if (!b.csr || (kind == CP_BODY_SIGN && !b.token))
            abort();
        char hex[CP_TOKEN_HASH_LEN + 1];
        if (b.token && cp_token_hash(b.token, hex, sizeof(hex)) == 0 &&
            strlen(hex) != CP_TOKEN_HASH_LEN)
            abort();
        X509_REQ_free(cp_csr_parse(b.csr, strlen(b.csr)));
        break;
    case CP_BODY_PEER:
        if (!cp_address_valid(b.address))
            abort();
        break;
    case CP_BODY_ADMIN:
        if ((b.reason && ca_reason_parse(b.reason) < 0) || b.replace < -1 || b.replace > 1)
            abort();
        break;
    }
    json_decref(doc);
    ERR_clear_error();
    return 0;
}
