/* fuzz_http1.c - the HTTP/1.1 identity-header filter, fed in two pieces. */
#include <stdint.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct px_h1 h;
    static char out[4096];
    memset(&h, 0, sizeof(h));
    size_t split = size ? data[0] % (size + 1) : 0, i = 0;
    const char *in = (const char *)data;
    for (int round = 0; round < 100000; round++) {
        size_t lim = i < split ? split : size;
        size_t used = 0, made = 0;
        if (px_h1_feed(&h, in + i, lim - i, &used, out, sizeof(out), &made,
                       "X-Client-Cert-Subject: CN=x\r\n") != 0)
            break;
        i += used;
        if (i >= size && h.pending == 0)
            break;
    }
    return 0;
}
