/* fuzz_identity.c - identity extraction from DER and PEM certificates. */
#include <stdint.h>

#include "meshtls/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meshtls_identity *id = NULL;
    if (meshtls_identity_from_der(data, size, &id, NULL) == 0) {
        meshtls_identity_days_left(id, 1);
        meshtls_identity_free(id);
    }
    id = NULL;
    if (meshtls_identity_from_pem((const char *)data, size, &id, NULL) == 0)
        meshtls_identity_free(id);
    return 0;
}
