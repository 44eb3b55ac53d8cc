/*
 * meshtls/spiffe.h - SPIFFE ID parsing and validation.
 *
 * Implements the SPIFFE-ID specification: "spiffe://" (scheme lower-case),
 * a trust domain of [a-z0-9.-_] (at most 255 bytes), an optional path of
 * "/"-separated segments of [A-Za-z0-9.-_] that are neither empty, "." nor
 * "..", no trailing "/", no query, fragment, port or userinfo, and at most
 * 2048 bytes in all.
 */
#ifndef MESHTLS_SPIFFE_H
#define MESHTLS_SPIFFE_H

#include <stddef.h>

#include "meshtls/err.h"
#include "meshtls/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MESHTLS_SPIFFE_ID_MAX 2048   /**< longest SPIFFE ID, in bytes */
#define MESHTLS_TRUST_DOMAIN_MAX 255 /**< longest trust domain, in bytes */

/** A parsed SPIFFE ID. Plain value, caller-owned; no resources. */
struct meshtls_spiffe_id {
    char trust_domain[MESHTLS_TRUST_DOMAIN_MAX + 1]; /**< e.g. "example.org" */
    char path[MESHTLS_SPIFFE_ID_MAX + 1];            /**< "" or "/svc/api" */
};

/**
 * Parse and validate `len` bytes at `uri` (need not be NUL-terminated).
 * @param out written only on success.
 * @return 0, or MESHTLS_EINVAL with `err` naming the offending part.
 */
MESHTLS_API int meshtls_spiffe_parse(const char *uri, size_t len, struct meshtls_spiffe_id *out,
                                     struct meshtls_err *err);

/**
 * Validate a bare trust domain ("example.org", no scheme).
 * @return 0 or MESHTLS_EINVAL.
 */
MESHTLS_API int meshtls_trust_domain_validate(const char *td, struct meshtls_err *err);

/**
 * Format `id` as "spiffe://td/path" into `buf` of `cap` bytes.
 * @return 0, or MESHTLS_EINVAL if it does not fit.
 */
MESHTLS_API int meshtls_spiffe_format(const struct meshtls_spiffe_id *id, char *buf, size_t cap);

/**
 * Match `id` against a pattern "spiffe://td/a/ * /c" where a segment "*"
 * matches exactly one path segment (ghostunnel's --allow-uri).
 * @return 1 on match, 0 otherwise.
 */
MESHTLS_API int meshtls_spiffe_match(const char *pattern, const char *id);

#ifdef __cplusplus
}
#endif
#endif
