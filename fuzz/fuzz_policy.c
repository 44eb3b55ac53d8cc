/* fuzz_policy.c - the YAML policy file parser, then a check against a peer. */
#include <stdint.h>
#include <string.h>

#include "meshtls/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meshtls_policy *p = NULL;
    if (meshtls_policy_new(&p) != 0)
        return 0;
    if (meshtls_policy_load_buffer(p, (const char *)data, size, "fuzz", NULL) == 0) {
        static char *uris[] = {"spiffe://acme.org/svc/orders"};
        struct meshtls_identity id;
        memset(&id, 0, sizeof(id));
        id.cn = "orders";
        id.ou = "";
        id.uris = uris;
        id.n_uris = 1;
        id.spiffe_id = uris[0];
        memcpy(id.spiffe.trust_domain, "acme.org", 9);
        struct meshtls_decision d;
        meshtls_policy_check(p, &id, "billing", &d);
    }
    meshtls_policy_free(p);
    return 0;
}
