/*
 * http1.c - HTTP/1.1 request filter (see http1.h).
 *
 * The head of each request is collected whole (at most PX_H1_HEAD_MAX),
 * rewritten in place into buf (request line, the client's headers less the
 * identity ones, then ours), and drained to the output; the body passes
 * through byte for byte while its framing is tracked.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"

static const char *const STRIP[] = {"x-client-cert-subject", "x-client-cert-serial",
                                    "x-forwarded-client-cert"};

static int name_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && line[k] == ':' && strncasecmp(line, name, k) == 0;
}

/* Value of header line `line` (n bytes, no CRLF) after the colon, trimmed. */
static void value_of(const char *line, size_t n, const char **v, size_t *vn)
{
    const char *c = memchr(line, ':', n);
    const char *e = line + n;
    const char *p = c ? c + 1 : e;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *v = p;
    *vn = (size_t)(e - p);
}

/* Parse a decimal Content-Length; @return 0 or -1. */
static int parse_len(const char *v, size_t n, unsigned long long *out)
{
    unsigned long long x = 0;
    if (n == 0 || n > 19)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)v[i]))
            return -1;
        x = x * 10 + (unsigned long long)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/*
 * Rewrite the complete head in h->buf[0..head_len) (ending in CRLFCRLF):
 * decide the body framing, drop identity headers, append `inject`.
 */
static int rewrite_head(struct px_h1 *h, size_t head_len, const char *inject)
{
    char tmp[PX_H1_HEAD_MAX + 4096 + 8];
    size_t tn = 0, inj = inject ? strnlen(inject, 4096) : 0;
    const char *p = h->buf, *end = h->buf + head_len;
    int chunked = 0, has_len = 0, upgrade = 0, first = 1;
    unsigned long long clen = 0;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return PX_H1_E_BAD;
        size_t n = (size_t)(eol - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0)
            break; /* the empty line */
        if (first) {
            /* METHOD SP TARGET SP HTTP/1.x */
            const char *sp = memchr(p, ' ', n);
            const char *ver = n >= 8 ? p + n - 8 : NULL;
            if (!sp || !ver || strncmp(ver, "HTTP/1.", 7) != 0)
                return PX_H1_E_BAD;
            if ((size_t)(sp - p) == 7 && !strncmp(p, "CONNECT", 7))
                upgrade = 1;
            first = 0;
        } else {
            if (!memchr(p, ':', n) || p[0] == ' ' || p[0] == '\t')
                return PX_H1_E_BAD; /* not "name: value", or obsolete line folding */
            int skip = 0;
            for (size_t i = 0; i < sizeof(STRIP) / sizeof(STRIP[0]); i++)
                skip |= name_is(p, n, STRIP[i]);
            const char *v;
            size_t vn;
            value_of(p, n, &v, &vn);
            if (name_is(p, n, "content-length")) {
                unsigned long long l;
                if (parse_len(v, vn, &l) != 0 || (has_len && l != clen))
                    return PX_H1_E_BAD; /* conflicting lengths: request smuggling */
                clen = l;
                has_len = 1;
            } else if (name_is(p, n, "transfer-encoding")) {
                if (vn >= 7 && !strncasecmp(v + vn - 7, "chunked", 7))
                    chunked = 1;
                else
                    return PX_H1_E_BAD;
            } else if (name_is(p, n, "upgrade")) {
                upgrade = 1;
            }
            if (skip) {
                p = eol + 1;
                continue;
            }
        }
        memcpy(tmp + tn, p, n);
        tn += n;
        tmp[tn++] = '\r';
        tmp[tn++] = '\n';
        p = eol + 1;
    }
    if (first)
        return PX_H1_E_BAD;
    if (chunked && has_len)
        return PX_H1_E_BAD; /* both: request smuggling */
    memcpy(tmp + tn, inject, inj);
    tn += inj;
    tmp[tn++] = '\r';
    tmp[tn++] = '\n';
    if (tn > sizeof(h->buf))
        return PX_H1_E_TOO_BIG;
    memcpy(h->buf, tmp, tn);
    h->pending_off = 0;
    h->pending = tn;
    h->requests++;
    if (upgrade)
        h->state = PX_H1_RAW;
    else if (chunked)
        h->state = PX_H1_CHUNK_SIZE;
    else if (has_len && clen > 0) {
        h->state = PX_H1_BODY;
        h->remaining = clen;
    } else
        h->state = PX_H1_HEAD;
    return 0;
}

/* Copy pending output; @return bytes copied. */
static size_t drain(struct px_h1 *h, char *out, size_t cap)
{
    size_t n = h->pending < cap ? h->pending : cap;
    memcpy(out, h->buf + h->pending_off, n);
    h->pending_off += n;
    h->pending -= n;
    if (h->pending == 0)
        h->pending_off = h->len = 0;
    return n;
}

/* Parse a chunk-size line "1a;ext" in buf[0..n); @return 0 or -1. */
static int chunk_size(const char *line, size_t n, unsigned long long *out)
{
    unsigned long long x = 0;
    size_t i = 0;
    for (; i < n && isxdigit((unsigned char)line[i]); i++) {
        if (i >= 15)
            return -1;
        int d = isdigit((unsigned char)line[i]) ? line[i] - '0'
                                                : (tolower((unsigned char)line[i]) - 'a' + 10);
        x = x * 16 + (unsigned long long)d;
    }
    if (i == 0 || (i < n && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
        return -1;
    *out = x;
    return 0;
}

int px_h1_feed(struct px_h1 *h, const char *in, size_t inlen, size_t *consumed, char *out,
               size_t outcap, size_t *produced, const char *inject)
{
    size_t ci = 0, po = 0;
    int rc = 0;
    while (po < outcap) {
        if (h->pending) {
            po += drain(h, out + po, outcap - po);
            continue;
        }
        if (ci >= inlen)
            break;
        const char *p = in + ci;
        size_t avail = inlen - ci;
        switch (h->state) {
        case PX_H1_RAW:
        case PX_H1_BODY:
        case PX_H1_CHUNK_DATA: {
            size_t n = avail < outcap - po ? avail : outcap - po;
            if (h->state != PX_H1_RAW && n > h->remaining)
                n = (size_t)h->remaining;
            memcpy(out + po, p, n);
            po += n;
            ci += n;
            if (h->state == PX_H1_RAW)
                break;
            h->remaining -= n;
            if (h->remaining == 0)
                h->state = h->state == PX_H1_BODY ? PX_H1_HEAD : PX_H1_CHUNK_SIZE;
            break;
        }
        case PX_H1_HEAD:
        case PX_H1_CHUNK_SIZE:
        case PX_H1_TRAILER: {
            /* collect one byte at a time up to the terminator: heads are small */
            size_t lim = h->state == PX_H1_HEAD ? PX_H1_HEAD_MAX : PX_H1_LINE_MAX;
            if (h->len >= lim) {
                rc = PX_H1_E_TOO_BIG;
                goto out;
            }
            h->buf[h->len++] = *p;
            ci++;
            if (*p != '\n')
                break;
            if (h->state == PX_H1_HEAD) {
                if (h->len == 2 && h->buf[0] == '\r') { /* stray CRLF between requests */
                    h->len = 0;
                    break;
                }
                if (h->len >= 4 && !memcmp(h->buf + h->len - 4, "\r\n\r\n", 4)) {
                    if ((rc = rewrite_head(h, h->len, inject)) != 0)
                        goto out;
                }
                break;
            }
            /* a chunk-size or trailer line is complete: pass it on */
            size_t n = h->len;
            size_t ln = n >= 2 && h->buf[n - 2] == '\r' ? n - 2 : n - 1;
            if (h->state == PX_H1_CHUNK_SIZE) {
                unsigned long long sz;
                if (chunk_size(h->buf, ln, &sz) != 0) {
                    rc = PX_H1_E_BAD;
                    goto out;
                }
                if (sz == 0)
                    h->state = PX_H1_TRAILER;
                else {
                    h->state = PX_H1_CHUNK_DATA;
                    h->remaining = sz + 2; /* data, then its CRLF */
                }
            } else if (ln == 0) {
                h->state = PX_H1_HEAD; /* end of trailers: next request */
            }
            h->pending_off = 0;
            h->pending = n;
            break;
        }
        }
    }
out:
    *consumed = ci;
    *produced = po;
    return rc;
}
