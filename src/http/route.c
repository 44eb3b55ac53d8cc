/*
 * route.c - the route table: method + path pattern -> handler.
 *
 * A pattern is a list of '/'-separated segments, each a literal or a `{name}` that
 * captures one non-empty segment.  The table is a plain list tried in order: a server
 * has tens of routes, and a list walk over short strings costs less than the request's
 * parsing; a trie would earn its place only with hundreds.  The router is immutable once
 * built, so sessions on many threads share it without locks.
 *
 * Matching works on the raw path: literals compare byte for byte (a client that
 * percent-encodes an unreserved character in a literal segment gets a 404), and a
 * captured value is decoded only when the session hands it to the handler.
 */
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "http_int.h"

struct mt_http_router {
    struct http_route *head; /* first route added */
    struct http_route *tail; /* last, where the next is appended */
};

int http_method_from_name(const char *name)
{
    /* http_parser numbers its methods 0..N and names the rest "<unknown>". */
    for (int m = 0; m < 64; m++) {
        const char *s = http_method_str((enum http_method)m);
        if (s[0] == '<')
            break;
        if (strcmp(s, name) == 0)
            return m;
    }
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long http_pct_decode(const char *in, size_t len, char *out, size_t cap, int plus)
{
    size_t o = 0;
    if (cap == 0)
        return -2;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (len - i < 3)
                return -1; /* fewer than two hex digits follow */
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            if (c == '\0')
                return -1; /* a NUL would cut the C string a handler sees */
            i += 2;
        } else if (plus && c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -2;
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

struct mt_http_router *mt_http_router_new(void)
{
    return calloc(1, sizeof(struct mt_http_router));
}

static void route_free(struct http_route *rt)
{
    if (!rt)
        return;
    for (unsigned i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->is_param);
    free(rt->pattern);
    free(rt);
}

void mt_http_router_free(struct mt_http_router *r)
{
    if (!r)
        return;
    struct http_route *rt = r->head;
    while (rt) {
        struct http_route *next = rt->next;
        route_free(rt);
        rt = next;
    }
    free(r);
}

/* A literal segment may hold what a path segment may (RFC 3986 pchar, raw). */
static int seg_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()*+,;=:@%", c) != NULL;
}

int mt_http_route_add(struct mt_http_router *r, const char *method, const char *pattern,
                      mt_http_handler_fn fn, void *arg, struct meshtls_err *err)
{
    struct http_route *rt = NULL;
    int rc;
    if (!r || !method || !pattern || !fn)
        return meshtls_err_set(err, MESHTLS_EINVAL, "route: method, pattern and handler needed");
    int m = http_method_from_name(method);
    if (m < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "route %s %s: unknown method (use upper case: GET, POST, ...)",
                               method, pattern);
    if (pattern[0] != '/')
        return meshtls_err_set(err, MESHTLS_EINVAL, "route %s %s: the pattern must start with '/'",
                               method, pattern);
    rt = calloc(1, sizeof(*rt));
    if (!rt)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "route: out of memory");
    rt->method = (unsigned)m;
    rt->fn = fn;
    rt->arg = arg;
    rt->pattern = strdup(pattern);
    unsigned n = 1;
    for (const char *p = pattern + 1; *p; p++)
        n += *p == '/';
    rt->segs = calloc(n, sizeof(char *));
    rt->is_param = calloc(n, 1);
    if (!rt->pattern || !rt->segs || !rt->is_param) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "route: out of memory");
        goto out;
    }
    unsigned nparams = 0;
    const char *p = pattern + 1;
    for (unsigned i = 0; i < n; i++) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int is_param = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        if (is_param) {
            p++;
            len -= 2;
            if (len == 0 || ++nparams > HTTP_MAX_PARAMS) {
                rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                     "route %s %s: empty {} or more than %d parameters", method,
                                     pattern, HTTP_MAX_PARAMS);
                goto out;
            }
        }
        for (size_t k = 0; k < len; k++) {
            if (!seg_char_ok(p[k]) || (is_param && strchr("{}", p[k]))) {
                rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                     "route %s %s: character '%c' not allowed in a segment", method,
                                     pattern, p[k]);
                goto out;
            }
        }
        rt->segs[i] = strndup(p, len);
        if (!rt->segs[i]) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "route: out of memory");
            goto out;
        }
        rt->is_param[i] = (unsigned char)is_param;
        rt->nsegs = i + 1;
        p += len + (is_param ? 1 : 0);
        if (*p == '/')
            p++;
    }
    for (struct http_route *o = r->head; o; o = o->next) {
        if (o->method == rt->method && strcmp(o->pattern, rt->pattern) == 0) {
            rc = meshtls_err_set(err, MESHTLS_EEXIST, "route %s %s: added twice", method, pattern);
            goto out;
        }
    }
    if (r->tail)
        r->tail->next = rt;
    else
        r->head = rt;
    r->tail = rt;
    return 0;
out:
    route_free(rt);
    return rc;
}

/* Does `rt` match `path`?  Captures parameters into `m` when it does. */
static int route_matches(const struct http_route *rt, const char *path, struct http_match *m)
{
    const char *p = path + 1;
    unsigned np = 0;
    for (unsigned i = 0; i < rt->nsegs; i++) {
        if (!p)
            return 0; /* the path has fewer segments */
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (rt->is_param[i]) {
            if (len == 0)
                return 0;
            m->names[np] = rt->segs[i];
            m->raw[np] = p;
            m->raw_len[np] = len;
            np++;
        } else if (strlen(rt->segs[i]) != len || memcmp(rt->segs[i], p, len) != 0) {
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    if (p)
        return 0; /* the path has more segments */
    m->nparams = np;
    return 1;
}

void http_router_match(const struct mt_http_router *r, unsigned method, const char *path,
                       struct http_match *m)
{
    struct http_match tmp;
    const struct http_route *get = NULL;
    memset(m, 0, sizeof(*m));
    for (const struct http_route *rt = r ? r->head : NULL; rt; rt = rt->next) {
        memset(&tmp, 0, sizeof(tmp));
        if (!route_matches(rt, path, &tmp))
            continue;
        m->allow |= UINT64_C(1) << rt->method;
        if (rt->method == method && !m->route) {
            *m = (struct http_match){.route = rt, .allow = m->allow, .nparams = tmp.nparams};
            memcpy(m->names, tmp.names, sizeof(tmp.names));
            memcpy(m->raw, tmp.raw, sizeof(tmp.raw));
            memcpy(m->raw_len, tmp.raw_len, sizeof(tmp.raw_len));
        } else if (rt->method == HTTP_GET && !get) {
            get = rt;
        }
    }
    if (m->allow & (UINT64_C(1) << HTTP_GET))
        m->allow |= UINT64_C(1) << HTTP_HEAD; /* a GET route answers HEAD too */
    if (!m->route && method == HTTP_HEAD && get) {
        uint64_t allow = m->allow;
        route_matches(get, path, m);
        m->route = get;
        m->allow = allow;
    }
}
