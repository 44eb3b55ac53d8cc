/*
 * router_authz.c - the router's pure logic: who the certificate names, what the line asks
 * for, and 004's authorization rule.  No I/O and no globals, so each piece is tested as a
 * table (tests/unit/proxy/test_router_authz.c).
 */
#include <stdlib.h>
#include <string.h>

#include "meshtls/spiffe.h"
#include "parse.h"
#include "router.h"

static const char *const code_names[RT_CODE_N] = {
    [RT_OK] = "ok",
    [RT_BAD_IDENTITY] = "bad-identity",
    [RT_BAD_REQUEST] = "bad-request",
    [RT_TIMEOUT] = "timeout",
    [RT_NOT_FOUND] = "not-found",
    [RT_FORBIDDEN] = "forbidden",
    [RT_AUTHZ_UNAVAILABLE] = "authz-unavailable",
    [RT_BACKEND_UNAVAILABLE] = "backend-unavailable",
    [RT_BUSY] = "busy",
    [RT_RATE_LIMITED] = "rate-limited",
    [RT_TOO_MANY_SESSIONS] = "too-many-sessions",
    [RT_REVOKED] = "revoked",
};

/* Fixed lines: nothing from the request or the database is ever echoed back. */
static const char *const code_lines[RT_CODE_N] = {
    [RT_OK] = "OK\n",
    [RT_BAD_IDENTITY] = "ERROR: bad-identity the client certificate is not a user "
                        "certificate of this router's issuer\n",
    [RT_BAD_REQUEST] = "ERROR: bad-request expected one line: a connect id of 1 to 253 "
                       "characters A-Z a-z 0-9 . _ ~ : @ + -\n",
    [RT_TIMEOUT] = "ERROR: timeout the connect id line did not arrive in time\n",
    [RT_NOT_FOUND] = "ERROR: not-found no such host\n",
    [RT_FORBIDDEN] = "ERROR: forbidden you are not granted access to this host\n",
    [RT_AUTHZ_UNAVAILABLE] = "ERROR: authz-unavailable the authorization database is "
                             "unavailable; try again later\n",
    [RT_BACKEND_UNAVAILABLE] = "ERROR: backend-unavailable the host did not accept the "
                               "connection\n",
    [RT_BUSY] = "ERROR: busy the router is overloaded; try again later\n",
    [RT_RATE_LIMITED] = "ERROR: rate-limited too many connection attempts; try again later\n",
    [RT_TOO_MANY_SESSIONS] = "ERROR: too-many-sessions too many open sessions; close one "
                             "first\n",
    [RT_REVOKED] = "ERROR: revoked the client certificate has been revoked; ask for a new "
                   "one\n",
};

const char *rt_code_name(enum rt_code c)
{
    return (unsigned)c < RT_CODE_N ? code_names[c] : "unknown";
}

const char *rt_code_line(enum rt_code c)
{
    return (unsigned)c < RT_CODE_N ? code_lines[c] : code_lines[RT_AUTHZ_UNAVAILABLE];
}

/* An id segment of the SPIFFE path: SPIFFE's path characters, bounded. */
static int id_segment(const char *s, size_t n)
{
    if (n == 0 || n > RT_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int rt_identity_parse(const char *spiffe_id, const char *issuer, char *org, char *user,
                      struct meshtls_err *err)
{
    if (!spiffe_id)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "the certificate carries no SPIFFE ID (exactly one URI SAN "
                               "spiffe://%s/orgs/<org>/users/<user> is required)",
                               issuer);
    struct meshtls_spiffe_id id;
    struct meshtls_err pe = MESHTLS_ERR_INIT;
    if (meshtls_spiffe_parse(spiffe_id, strlen(spiffe_id), &id, &pe) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "SPIFFE ID %s: %s", spiffe_id, pe.msg);
    if (strcmp(id.trust_domain, issuer) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "SPIFFE ID %s: trust domain %s is not the router's issuer %s",
                               spiffe_id, id.trust_domain, issuer);
    /* exactly /orgs/<org>/users/<user> */
    const char *p = id.path;
    static const char orgs[] = "/orgs/", users[] = "/users/";
    if (strncmp(p, orgs, sizeof(orgs) - 1) != 0)
        goto shape;
    p += sizeof(orgs) - 1;
    const char *slash = strchr(p, '/');
    if (!slash || !id_segment(p, (size_t)(slash - p)))
        goto shape;
    size_t on = (size_t)(slash - p);
    const char *o = p;
    p = slash;
    if (strncmp(p, users, sizeof(users) - 1) != 0)
        goto shape;
    p += sizeof(users) - 1;
    size_t un = strlen(p);
    if (!id_segment(p, un))
        goto shape;
    memcpy(org, o, on);
    org[on] = '\0';
    memcpy(user, p, un);
    user[un] = '\0';
    return 0;
shape:
    return meshtls_err_set(err, MESHTLS_EINVAL,
                           "SPIFFE ID %s is not a user identity: expected "
                           "spiffe://%s/orgs/<org>/users/<user>",
                           spiffe_id, issuer);
}

enum rt_code rt_connect_id_check(const char *line, size_t n, char *out)
{
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n == 0 || n > RT_CONNECT_ID_MAX)
        return RT_BAD_REQUEST;
    for (size_t i = 0; i < n; i++) {
        char ch = line[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("._~:@+-", ch)) ||
            ch == '\0')
            return RT_BAD_REQUEST;
    }
    memcpy(out, line, n);
    out[n] = '\0';
    return RT_OK;
}

void rt_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Append s[0..n) to *v unless it is empty. */
static int push(char ***v, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (len == 0 || *n >= RT_ARRAY_MAX)
        return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return MESHTLS_ENOMEM;
        *v = nv, *cap = nc;
    }
    char *d = malloc(len + 1);
    if (!d)
        return MESHTLS_ENOMEM;
    memcpy(d, s, len);
    d[len] = '\0';
    (*v)[(*n)++] = d;
    return 0;
}

/*
 * One element: quoted ("..." with backslash escapes, as both PostgreSQL and JSON write
 * the characters these ids use) or bare (PostgreSQL: up to ',' or the closing brace).
 * Bare NULL (PostgreSQL) is skipped.  JSON's \uXXXX is not decoded: such an element is
 * kept with its escape and so matches no id (ids are ASCII).
 */
int rt_array_parse(const char *text, char ***out, size_t *n)
{
    *out = NULL, *n = 0;
    if (!text)
        return 0;
    while (*text == ' ')
        text++;
    char open = text[0], close = open == '{' ? '}' : open == '[' ? ']' : 0;
    if (!close)
        return MESHTLS_EINVAL;
    int json = open == '[';
    const char *p = text + 1;
    size_t cap = 0, tlen = strlen(text);
    char *tmp = malloc(tlen + 1);
    if (!tmp)
        return MESHTLS_ENOMEM;
    int rc = 0;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        if (*p == close)
            break;
        size_t k = 0;
        int quoted = *p == '"';
        if (quoted) {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                tmp[k++] = *p++;
            }
            if (*p != '"') {
                rc = MESHTLS_EINVAL;
                break;
            }
            p++;
            if ((rc = push(out, n, &cap, tmp, k)) != 0)
                break;
        } else if (!json) {
            while (*p && *p != ',' && *p != close)
                tmp[k++] = *p++;
            while (k > 0 && tmp[k - 1] == ' ')
                k--;
            if (!(k == 4 && !strncmp(tmp, "NULL", 4)) && (rc = push(out, n, &cap, tmp, k)) != 0)
                break;
        } else if (!strncmp(p, "null", 4)) {
            p += 4;
        } else {
            rc = MESHTLS_EINVAL; /* JSON: only strings (and null) */
            break;
        }
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == close)
            break;
        rc = MESHTLS_EINVAL;
        break;
    }
    free(tmp);
    if (rc) {
        rt_strv_free(*out, *n);
        *out = NULL, *n = 0;
    }
    return rc;
}

static int in_list(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && !strcmp(v[i], s))
            return 1;
    return 0;
}

enum rt_code rt_authz_decide(const struct rt_host *host, const struct rt_team *teams,
                             size_t n_teams, const char *org, const char *user, const char **via)
{
    if (via)
        *via = NULL;
    /* another organisation's host answers exactly as a missing one */
    if (!host || !host->org_id || !org || strcmp(host->org_id, org) != 0)
        return RT_NOT_FOUND;
    if (in_list(host->user_ids, host->n_user_ids, user)) {
        if (via)
            *via = "user";
        return RT_OK;
    }
    for (size_t i = 0; i < n_teams; i++) {
        const struct rt_team *t = &teams[i];
        /* only teams the host lists, of the host's own organisation */
        if (!t->team_id || !t->org_id || strcmp(t->org_id, host->org_id) != 0 ||
            !in_list(host->team_ids, host->n_team_ids, t->team_id))
            continue;
        if (in_list(t->user_ids, t->n_user_ids, user)) {
            if (via)
                *via = t->team_id;
            return RT_OK;
        }
    }
    return RT_FORBIDDEN;
}

int rt_backend_addr(const char *addr, char *out, size_t cap)
{
    if (!addr)
        return MESHTLS_EINVAL;
    size_t n = strlen(addr);
    if (n == 0 || n + 8 > cap)
        return MESHTLS_EINVAL;
    const char *port = NULL;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb == addr + 1)
            return MESHTLS_EINVAL;
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb[1] != '\0')
            return MESHTLS_EINVAL;
    } else {
        const char *c1 = strchr(addr, ':');
        if (c1 && strchr(c1 + 1, ':')) { /* bare IPv6: no port */
            int w = snprintf(out, cap, "[%s]:%d", addr, RT_DEFAULT_PORT);
            return w > 0 && (size_t)w < cap ? 0 : MESHTLS_EINVAL;
        }
        if (c1) {
            if (c1 == addr)
                return MESHTLS_EINVAL;
            port = c1 + 1;
        }
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)addr[i] <= ' ' || addr[i] == '/' || addr[i] == 0x7f)
            return MESHTLS_EINVAL;
    if (port) {
        int v = 0;
        if (mt_parse_int(port, 1, 65535, &v) != 0)
            return MESHTLS_EINVAL;
        int w = snprintf(out, cap, "%s", addr);
        return w > 0 && (size_t)w < cap ? 0 : MESHTLS_EINVAL;
    }
    int w = snprintf(out, cap, "%s:%d", addr, RT_DEFAULT_PORT);
    return w > 0 && (size_t)w < cap ? 0 : MESHTLS_EINVAL;
}
