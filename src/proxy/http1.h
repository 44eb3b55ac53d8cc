/*
 * http1.h - a streaming HTTP/1.1 request filter for identity forwarding.
 *
 * It follows request boundaries (Content-Length, chunked bodies, Upgrade /
 * CONNECT switching to raw bytes) so that every request on a keep-alive
 * connection gets the identity headers, and strips any the client sent
 * itself: X-Client-Cert-Subject, X-Client-Cert-Serial,
 * X-Forwarded-Client-Cert.  Pure: no I/O, no allocation; bounded by
 * PX_H1_HEAD_MAX per request head.
 */
#ifndef MESHTLS_HTTP1_H
#define MESHTLS_HTTP1_H

#include <stddef.h>

#define PX_H1_HEAD_MAX 16384 /* request line + headers */
#define PX_H1_LINE_MAX 1024  /* chunk-size and trailer lines */

enum px_h1_state {
    PX_H1_HEAD = 0,   /* collecting a request head */
    PX_H1_BODY,       /* Content-Length body: `remaining` bytes */
    PX_H1_CHUNK_SIZE, /* a chunk-size line */
    PX_H1_CHUNK_DATA, /* chunk data: `remaining` bytes, then CRLF */
    PX_H1_TRAILER,    /* trailer lines until an empty one */
    PX_H1_RAW,        /* after Upgrade / CONNECT: bytes as they come */
};

struct px_h1 {
    enum px_h1_state state;
    unsigned long long remaining; /* body or chunk bytes left (chunk: + 2 for CRLF) */
    size_t len;                   /* bytes in buf */
    size_t pending_off, pending;  /* output waiting to be copied out */
    char buf[PX_H1_HEAD_MAX];     /* head or line being collected, or rewritten head */
    unsigned requests;            /* requests seen */
};

/** Errors: all negative. */
#define PX_H1_E_TOO_BIG (-1) /* head or line over its limit */
#define PX_H1_E_BAD (-2)     /* not HTTP/1.x, or a malformed length */

/**
 * Feed `inlen` bytes of client-to-server stream; writes filtered output to
 * `out` (`outcap` bytes).  `inject` is the header block to add to every
 * request (each line ending in CRLF; borrowed; at most 4 KiB).
 * Consumes what it can: *consumed and *produced say how much.
 * @return 0 or a PX_H1_E_* code (the connection should then be closed).
 */
int px_h1_feed(struct px_h1 *h, const char *in, size_t inlen, size_t *consumed, char *out,
               size_t outcap, size_t *produced, const char *inject);

#endif
