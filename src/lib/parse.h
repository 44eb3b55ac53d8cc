/*
 * parse.h - the one place where text becomes a number (internal to meshtls).
 *
 * Every number from a flag, a variable, a file or the store goes through these, so
 * each accepts the same strict forms and rejects the same junk: no sign but an optional
 * '-', no spaces, no '+', no trailing characters, no overflow.  `make check-src` bans raw
 * strtol and friends everywhere else.
 *
 * Errors follow meshtls/err.h: 0, or MESHTLS_EINVAL (no message: the caller knows which
 * flag or key it parsed and says so).  `*out` is written only on success.
 */
#ifndef MESHTLS_PARSE_H
#define MESHTLS_PARSE_H

#include <stdint.h>

/** A whole decimal number in [min, max]. */
int mt_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/** mt_parse_i64 into an int. */
int mt_parse_int(const char *s, int min, int max, int *out);

/**
 * A duration: "500ms", "10s", "5m", "1h", or a plain number of seconds, into
 * milliseconds in [0, max_ms].
 */
int mt_parse_duration_ms(const char *s, int64_t max_ms, int64_t *out);

#endif
