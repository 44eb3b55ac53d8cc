/*
 * http_int.h - what http.c and route.c share inside src/http (not for other layers).
 */
#ifndef MESHTLS_HTTP_INT_H
#define MESHTLS_HTTP_INT_H

#include <stdint.h>

#include "http.h"

/** Most `{name}` segments one route may have. */
#define HTTP_MAX_PARAMS 8

/** One route, as stored by the router. */
struct http_route {
    unsigned method;         /* enum http_method of http_parser */
    char *pattern;           /* as given, for messages */
    char **segs;             /* segments; a parameter is stored as its name */
    unsigned char *is_param; /* 1 where segs[i] is a {name} */
    unsigned nsegs;          /* number of segments */
    mt_http_handler_fn fn;   /* the handler */
    void *arg;               /* borrowed, passed to fn */
    struct http_route *next; /* in order of addition */
};

/** The result of matching a path. */
struct http_match {
    const struct http_route *route;     /* NULL: no route for this method */
    uint64_t allow;                     /* bit m set: method m has a route for this path */
    unsigned nparams;                   /* parameters captured by route */
    const char *names[HTTP_MAX_PARAMS]; /* parameter names (owned by the route) */
    const char *raw[HTTP_MAX_PARAMS];   /* raw values, pointers into the path */
    size_t raw_len[HTTP_MAX_PARAMS];    /* their lengths */
};

/**
 * Matches `path` (raw, starting with '/', NUL-terminated, no query) for `method`.
 * A HEAD request falls back to a GET route.  Fills `*m`; m->route is NULL if nothing
 * matched for this method (m->allow then says whether another method would: 405 vs 404).
 */
void http_router_match(const struct mt_http_router *r, unsigned method, const char *path,
                       struct http_match *m);

/** The method named `name` exactly ("GET"), as an enum http_method, or -1. */
int http_method_from_name(const char *name);

/**
 * Percent-decodes `len` bytes of `in` into `out` (`cap` bytes, NUL-terminated); `plus`
 * turns '+' into a space (query strings).  @return the decoded length, -1 for a bad
 * escape or an encoded NUL, -2 if it does not fit.
 */
long http_pct_decode(const char *in, size_t len, char *out, size_t cap, int plus);

#endif
