/*
 * fuzz_router.c - the router's input paths on arbitrary bytes: the connect-id line, the
 * certificate's SPIFFE ID as a user identity, array columns as a database returns them,
 * and internal_ip_addr.  Invariants: an accepted connect id has only allowed characters
 * and fits; an accepted identity's org and user are non-empty and fit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char id[RT_CONNECT_ID_MAX + 1];
    if (rt_connect_id_check((const char *)data, size, id) == RT_OK) {
        size_t n = strlen(id);
        if (n == 0 || n > RT_CONNECT_ID_MAX ||
            strspn(id, "abcdefghijklmnopqrstuvwxyz"
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789._~:@+-") != n)
            abort();
    }
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char org[RT_ID_MAX + 1], user[RT_ID_MAX + 1];
    if (rt_identity_parse(s, "example.com", org, user, NULL) == 0 &&
        (!org[0] || !user[0] || strlen(org) > RT_ID_MAX || strlen(user) > RT_ID_MAX))
        abort();
    char **v = NULL;
    size_t nv = 0;
    if (rt_array_parse(s, &v, &nv) == 0) {
        const char *users[1] = {"u"};
        struct rt_host h = {"o", (const char *const *)v, nv, (const char *const *)v, nv};
        struct rt_team t = {"t", "o", users, 1};
        rt_authz_decide(&h, &t, 1, "o", "u", NULL);
    }
    rt_strv_free(v, nv);
    char addr[300];
    rt_backend_addr(s, addr, sizeof(addr));
    free(s);
    return 0;
}
