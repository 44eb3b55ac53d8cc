/*
 * json_utf8.c - JSON strings from bytes that may not be UTF-8; see json_utf8.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_utf8.h"

size_t mt_utf8_seq_len(const unsigned char *s, size_t len)
{
    if (len == 0)
        return 0;
    unsigned char c = s[0];
    if (c >= 0x01 && c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte (RFC 3629 table) */
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return 0; /* NUL, a continuation byte, 0xc0/0xc1, 0xf5.. */
    }
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

size_t mt_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t k = mt_utf8_seq_len(p + i, len - i);
        if (k == 0)
            break;
        i += k;
    }
    return i;
}

json_t *mt_json_stringn(const char *s, size_t len)
{
    if (!s)
        return json_null();
    if (mt_utf8_valid_prefix(s, len) == len)
        return json_stringn_nocheck(s, len); /* checked just now: jansson need not again */
    /* Each bad byte becomes the 3 bytes of U+FFFD: at most 3 times the input. */
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *fixed = malloc(len * 3 + 1);
    if (!fixed)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t k = mt_utf8_seq_len(p + i, len - i);
        if (k) {
            memcpy(fixed + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn_nocheck(fixed, o);
    free(fixed);
    return j;
}

json_t *mt_json_string(const char *s)
{
    return s ? mt_json_stringn(s, strlen(s)) : json_null();
}

int mt_json_print(json_t *j, FILE *f)
{
    if (!j)
        return -1;
    int rc = json_dumpf(j, f, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (rc != 0 || fputc('\n', f) == EOF)
        return -1;
    return 0;
}
