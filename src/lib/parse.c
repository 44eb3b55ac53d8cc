/*
 * parse.c - the one place where text becomes a number (see parse.h).  The only file
 * allowed to call strtoll: scripts/checksrc.sh bans it elsewhere.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "meshtls/err.h"
#include "parse.h"

int mt_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    /* strtoll alone would accept " 12", "+12" and stop at "12abc": insist on the digits */
    if (!s || !*s)
        return MESHTLS_EINVAL;
    const char *d = s[0] == '-' ? s + 1 : s;
    if (*d < '0' || *d > '9')
        return MESHTLS_EINVAL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < min || v > max)
        return MESHTLS_EINVAL;
    *out = (int64_t)v;
    return 0;
}

int mt_parse_int(const char *s, int min, int max, int *out)
{
    int64_t v;
    int rc = mt_parse_i64(s, min, max, &v);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

int mt_parse_duration_ms(const char *s, int64_t max_ms, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    char num[20];
    size_t n = 0;
    while (s && s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || n >= sizeof(num))
        return MESHTLS_EINVAL;
    memcpy(num, s, n);
    num[n] = '\0';
    int64_t v;
    if (mt_parse_i64(num, 0, INT64_MAX / 3600000, &v) != 0)
        return MESHTLS_EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(s + n, units[i].unit)) {
            if (v * units[i].mult > max_ms)
                return MESHTLS_EINVAL;
            *out = v * units[i].mult;
            return 0;
        }
    return MESHTLS_EINVAL;
}
