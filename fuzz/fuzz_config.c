/* fuzz_config.c - the YAML configuration loader, then the TLS options. */
#include <stdint.h>

#include "meshtls/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meshtls_config *c = NULL;
    if (meshtls_config_new(&c) != 0)
        return 0;
    if (meshtls_config_load_buffer(c, (const char *)data, size, "fuzz", NULL) == 0) {
        struct meshtls_tls_opts o;
        meshtls_config_tls_opts(c, "server", &o, NULL);
        meshtls_config_tls_opts(c, "client", &o, NULL);
    }
    meshtls_config_free(c);
    return 0;
}
