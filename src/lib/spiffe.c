/*
 * spiffe.c - SPIFFE ID parsing and matching, after the SPIFFE-ID
 * specification (section 2): scheme, trust domain, path.
 *
 * Pure functions over bounded input; every rejection names the part at fault
 * so the message can be shown to an operator as it is.
 */
#include <string.h>

#include "meshtls/spiffe.h"

static const char SCHEME[] = "spiffe://";

static int td_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* Validate the trust domain `td` of `len` bytes; `what` prefixes messages. */
static int check_td(const char *td, size_t len, const char *what, struct meshtls_err *err)
{
    if (len == 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: the trust domain is empty", what);
    if (len > MESHTLS_TRUST_DOMAIN_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s: the trust domain is %zu bytes, more than %d", what, len,
                               MESHTLS_TRUST_DOMAIN_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = td[i];
        if (td_char(c))
            continue;
        if (c >= 'A' && c <= 'Z')
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: the trust domain must be lower case (found '%c')", what, c);
        if (c == ':')
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: a trust domain may not carry a port",
                                   what);
        if (c == '@')
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: a trust domain may not carry user info", what);
        if (c == '%')
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: percent-encoding is not allowed",
                                   what);
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s: invalid character 0x%02x in the trust domain (allowed: "
                               "a-z 0-9 . - _)",
                               what, (unsigned char)c);
    }
    return 0;
}

int meshtls_trust_domain_validate(const char *td, struct meshtls_err *err)
{
    if (!td)
        return meshtls_err_set(err, MESHTLS_EINVAL, "trust domain: missing");
    size_t len = strnlen(td, MESHTLS_TRUST_DOMAIN_MAX + 1);
    if (len > 9 && !strncmp(td, SCHEME, 9))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "trust domain '%.64s': give the bare name without spiffe://", td);
    return check_td(td, len, "trust domain", err);
}

int meshtls_spiffe_parse(const char *uri, size_t len, struct meshtls_spiffe_id *out,
                         struct meshtls_err *err)
{
    const char *what = "SPIFFE ID";
    if (!uri || len == 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: empty", what);
    if (len > MESHTLS_SPIFFE_ID_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %zu bytes, more than the %d allowed", what,
                               len, MESHTLS_SPIFFE_ID_MAX);
    if (memchr(uri, '\0', len))
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: contains a NUL byte", what);
    if (len < sizeof(SCHEME) - 1 || strncmp(uri, SCHEME, sizeof(SCHEME) - 1) != 0) {
        if (len >= 9 && !strncasecmp(uri, SCHEME, 9))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: the scheme must be lower case 'spiffe'", what);
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s '%.*s': must start with spiffe://", what,
                               (int)(len < 64 ? len : 64), uri);
    }
    const char *p = uri + sizeof(SCHEME) - 1, *end = uri + len;
    const char *q = memchr(p, '?', (size_t)(end - p));
    if (q)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: a query ('?') is not allowed", what);
    if (memchr(p, '#', (size_t)(end - p)))
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: a fragment ('#') is not allowed", what);

    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *td_end = slash ? slash : end;
    int rc = check_td(p, (size_t)(td_end - p), what, err);
    if (rc)
        return rc;

    /* Path: ("/" segment)*, segments non-empty, not "." or "..". */
    const char *s = td_end;
    while (s < end) {
        const char *seg = s + 1;
        const char *next = memchr(seg, '/', (size_t)(end - seg));
        const char *seg_end = next ? next : end;
        size_t n = (size_t)(seg_end - seg);
        if (n == 0)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   next ? "%s: the path has an empty segment ('//')"
                                        : "%s: the path may not end with '/'",
                                   what);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: the path may not contain '.' or '..' segments", what);
        for (size_t i = 0; i < n; i++)
            if (!path_char(seg[i]))
                return meshtls_err_set(err, MESHTLS_EINVAL,
                                       "%s: invalid character 0x%02x in the path (allowed: "
                                       "A-Z a-z 0-9 . - _)",
                                       what, (unsigned char)seg[i]);
        s = seg_end;
    }

    size_t tdl = (size_t)(td_end - p), pl = (size_t)(end - td_end);
    memcpy(out->trust_domain, p, tdl);
    out->trust_domain[tdl] = '\0';
    memcpy(out->path, td_end, pl);
    out->path[pl] = '\0';
    return 0;
}

int meshtls_spiffe_format(const struct meshtls_spiffe_id *id, char *buf, size_t cap)
{
    size_t tdl = strlen(id->trust_domain), pl = strlen(id->path);
    size_t need = sizeof(SCHEME) - 1 + tdl + pl + 1;
    if (need > cap)
        return MESHTLS_EINVAL;
    memcpy(buf, SCHEME, sizeof(SCHEME) - 1);
    memcpy(buf + sizeof(SCHEME) - 1, id->trust_domain, tdl);
    memcpy(buf + sizeof(SCHEME) - 1 + tdl, id->path, pl + 1);
    return 0;
}

int meshtls_spiffe_match(const char *pattern, const char *id)
{
    /* Walk both strings segment by segment ('/' separated, after the scheme):
     * "*" matches one whole segment, a final "**" matches one or more. */
    const char *p = pattern, *s = id;
    if (!p || !s)
        return 0;
    for (;;) {
        const char *pe = strchr(p, '/'), *se = strchr(s, '/');
        size_t pn = pe ? (size_t)(pe - p) : strlen(p);
        size_t sn = se ? (size_t)(se - s) : strlen(s);
        if (pn == 2 && p[0] == '*' && p[1] == '*' && !pe)
            return sn > 0; /* trailing "**": one or more segments remain */
        if (pn == 1 && p[0] == '*') {
            if (sn == 0)
                return 0;
        } else if (pn != sn || memcmp(p, s, pn) != 0) {
            return 0;
        }
        if (!pe || !se)
            return !pe && !se;
        p = pe + 1;
        s = se + 1;
    }
}
