/* fuzz_spiffe.c - SPIFFE ID parser and matcher on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meshtls/spiffe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meshtls_spiffe_id id;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    if (meshtls_spiffe_parse((const char *)data, size, &id, &err) == 0) {
        char buf[MESHTLS_SPIFFE_ID_MAX + 1];
        if (meshtls_spiffe_format(&id, buf, sizeof(buf)) != 0 || strlen(buf) != size ||
            memcmp(buf, data, size) != 0)
            abort(); /* a parsed ID must format back to its input */
        meshtls_spiffe_match(buf, buf);
        meshtls_trust_domain_validate(id.trust_domain, NULL);
    }
    /* split the input into pattern and id at the first newline */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char *nl = memchr(s, '\n', size);
    if (nl) {
        *nl = '\0';
        meshtls_spiffe_match(s, nl + 1);
    }
    free(s);
    return 0;
}
