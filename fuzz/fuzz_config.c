/*
 * fuzz_config.c - the YAML configuration loader (untrusted file contents),
 * then everything that reads what it stored: the typed getters and the TLS
 * options of both roles.  A second load of the same bytes checks that a
 * failed or repeated load leaves a consistent configuration.
 */
#include <stdint.h>

#include "meshtls/config.h"
#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meshtls_config *c = NULL;
    struct meshtls_tls_opts o;
    long n;
    int b;
    if (meshtls_config_new(&c) != 0)
        return 0;
    if (px_config_register(c, NULL) != 0) { /* the proxy's keys, as `meshtls proxy` loads them */
        meshtls_config_free(c);
        return 0;
    }
    for (int pass = 0; pass < 2; pass++)
        if (meshtls_config_load_buffer(c, (const char *)data, size, "fuzz", NULL) != 0)
            break;
    for (size_t i = 0; meshtls_config_key(c, i); i++) {
        const struct meshtls_config_keydef *d = meshtls_config_key(c, i);
        if (d->type == MESHTLS_CFG_BOOL)
            meshtls_config_get_bool(c, d->name, &b, NULL);
        else if (d->type == MESHTLS_CFG_INT || d->type == MESHTLS_CFG_DURATION)
            meshtls_config_get_int(c, d->name, &n, NULL);
    }
    meshtls_config_server_opts(c, &o, NULL);
    meshtls_config_client_opts(c, &o, NULL);
    meshtls_config_free(c);
    return 0;
}
