/*
 * meshtls/log.h - the library's log: levels, text or JSON lines on stderr,
 * or a caller-supplied sink.  Keys and tokens are never passed to it.
 *
 * Two calls write a line:
 *
 *   meshtls_log(level, fmt, ...)        free text ("accepting new connections again");
 *   meshtls_log_event(level, event, fields, n)   an event with typed fields, usually through
 *   MESHTLS_LOG_EVENT(level, "close", MESHTLS_LF_S("client", addr), MESHTLS_LF_U("bytes_up", n));
 *
 * Text format, one line per call (what a person reads in a terminal):
 *
 *   2026-12-02T12:00:00.123Z info  close client=127.0.0.1:5000 id=spiffe://td/svc/a bytes_up=12
 *       duration_ms=3.2 reason="idle timeout"
 *
 *   time (UTC, milliseconds), level padded to 5, the event name, then `key=value` for each field
 *   in the order given.  A value is written bare unless it is empty or contains a space, `"`,
 *   `=`, `\\` or a control character (< 0x20 or 0x7f); then it is put in double quotes with
 *   `\"`, `\\` and `\xNN` (control characters) escaped, so a line splits reliably: key up to
 *   the first `=`, value bare up to the next space, or quoted up to the closing unescaped `"`.
 *   Bytes >= 0x80 (UTF-8) pass unchanged.  A NULL string value is written as `-` (as the
 *   proxy's lines always did); an empty one as `""`.  Doubles are written with up to 15
 *   significant digits (`3.2`, `1e+20`).  Free text from meshtls_log() follows the level as it
 *   is, with control characters written as `\xNN` so one call is always one line.
 *
 * JSON format (`meshtls_log_set_json(1)`), one object per line:
 *
 *   {"time":"2026-12-02T12:00:00.123Z","level":"info","event":"close","client":"127.0.0.1:5000",
 *    "bytes_up":12,"duration_ms":3.2,"reason":"idle timeout"}
 *
 *   each field its own member: strings as strings, integers and doubles as numbers (a
 *   non-finite double as null, an unsigned value past 2^63 as a real of 15 digits), booleans as
 *   true/false, a NULL string as null.  Bytes that are
 *   not valid UTF-8 are replaced by U+FFFD, so every line is valid JSON.  A field named
 *   `time`, `level`, `event` or `msg`, or a key repeated in one call, is dropped.  Free text
 *   from meshtls_log() is {"time":…,"level":…,"msg":…}.
 *
 * Bounds: a line is at most MESHTLS_LOG_LINE_MAX bytes including its newline.  A longer event
 * is cut: in text the last value that does not fit ends in `...` and later fields are dropped;
 * in JSON the longest string values are shortened (ending in "...") and the member
 * `"truncated":true` is added.  Free text is cut at the same bound.
 *
 * Output: each line goes to stderr with one write(2) (a mutex keeps lines of several threads
 * whole even past PIPE_BUF); nothing else is written to stderr or stdout by the log.
 *
 * Standard field keys (use these names so lines of every command can be queried alike):
 *   event        (the event name itself, e.g. "close", "audit", "reload", "listen")
 *   action       what the connection was doing ("TLS handshake", "connecting to target")
 *   listener     the listener's name or address
 *   conn         connection id (unsigned, unique within the process)
 *   client       peer address "ip:port"
 *   id           the peer's SPIFFE ID (or subject when it has none)
 *   serial       the peer certificate's serial (hex)
 *   decision     "allow" | "deny"
 *   rule         the policy rule that decided
 *   reason       why (free text)
 *   bytes_up     bytes towards the target;  bytes_down  bytes towards the client
 *   duration_ms  a duration in milliseconds (double)
 * Keys are written as given: use [a-z0-9_].
 *
 * Configuration (level, format, sinks) is meant to be set at start-up, before threads log;
 * the level and format are atomics and may also change later.
 */
#ifndef MESHTLS_LOG_H
#define MESHTLS_LOG_H

#include <stddef.h>

#include "meshtls/export.h"

#ifdef __cplusplus
extern "C" {
#endif

enum meshtls_log_level {
    MESHTLS_LOG_DEBUG = 0,
    MESHTLS_LOG_INFO = 1,
    MESHTLS_LOG_WARN = 2,
    MESHTLS_LOG_ERROR = 3,
};

/** The longest line written, including its newline. */
#define MESHTLS_LOG_LINE_MAX 8192

/** The type of a field's value. */
enum meshtls_log_ftype {
    MESHTLS_LF_STR = 0, /**< v.s: a NUL-terminated string, or NULL */
    MESHTLS_LF_INT,     /**< v.i: a signed integer */
    MESHTLS_LF_UINT,    /**< v.u: an unsigned integer (bytes, ids) */
    MESHTLS_LF_DBL,     /**< v.d: a double (durations) */
    MESHTLS_LF_BOOL,    /**< v.b: 0 is false, anything else true */
};

/** One typed field of an event.  Everything is borrowed for the duration of the call. */
struct meshtls_log_field {
    const char *key;             /**< field name, [a-z0-9_] (see the standard keys above) */
    enum meshtls_log_ftype type; /**< which member of `v` holds the value */
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double d;
        int b;
    } v; /**< the value */
};

/* Field constructors (C compound literals; usable as MESHTLS_LOG_EVENT arguments). */
#define MESHTLS_LF_S(k, val)                                                                       \
    ((struct meshtls_log_field){.key = (k), .type = MESHTLS_LF_STR, .v.s = (val)})
#define MESHTLS_LF_I(k, val)                                                                       \
    ((struct meshtls_log_field){.key = (k), .type = MESHTLS_LF_INT, .v.i = (long long)(val)})
#define MESHTLS_LF_U(k, val)                                                                       \
    ((struct meshtls_log_field){                                                                   \
        .key = (k), .type = MESHTLS_LF_UINT, .v.u = (unsigned long long)(val)})
#define MESHTLS_LF_D(k, val)                                                                       \
    ((struct meshtls_log_field){.key = (k), .type = MESHTLS_LF_DBL, .v.d = (double)(val)})
#define MESHTLS_LF_B(k, val)                                                                       \
    ((struct meshtls_log_field){.key = (k), .type = MESHTLS_LF_BOOL, .v.b = (val) ? 1 : 0})

/**
 * Log `event` with one or more fields, built in place:
 *   MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "close", MESHTLS_LF_S("client", a),
 *                     MESHTLS_LF_U("bytes_up", n));
 * The field array is a compound literal on the caller's stack; `sizeof` does not evaluate the
 * arguments, so each is evaluated once.  For an event without fields call
 * meshtls_log_event(level, event, NULL, 0).
 */
#define MESHTLS_LOG_EVENT(level, event, ...)                                                       \
    meshtls_log_event((level), (event), (const struct meshtls_log_field[]){__VA_ARGS__},           \
                      sizeof((const struct meshtls_log_field[]){__VA_ARGS__}) /                    \
                          sizeof(struct meshtls_log_field))

/** A log sink: receives the level and the formatted message (borrowed). */
typedef void (*meshtls_log_fn)(int level, const char *msg, void *arg);

/**
 * A structured sink: receives each event with its fields (all borrowed for the call).
 * Free text from meshtls_log() does not reach it.
 */
typedef void (*meshtls_log_event_fn)(int level, const char *event,
                                     const struct meshtls_log_field *f, size_t n, void *arg);

/** Drop messages below `level` (default INFO). */
MESHTLS_API void meshtls_log_set_level(int level);
/** @return non-zero when a message at `level` would be written (skip costly arguments). */
MESHTLS_API int meshtls_log_enabled(int level);
/** Parse "debug|info|warn|error"; @return level or -1. */
MESHTLS_API int meshtls_log_level_parse(const char *s);
/** Write JSON lines instead of text when `json` is non-zero. */
MESHTLS_API void meshtls_log_set_json(int json);
/**
 * Tell a script on stdout that a listener is bound (the log goes to stderr): the line
 * `WHAT on ADDR` ("listening on 127.0.0.1:8443"), or in JSON mode one JSON object
 * `{"announce":"WHAT","addr":"ADDR"}`, so that stdout carries nothing but JSON then.
 * `what` and `addr` are borrowed.  Flushes stdout.
 */
MESHTLS_API void meshtls_log_announce(const char *what, const char *addr);
/**
 * Send messages to `fn` instead of stderr (NULL restores stderr).  Free text arrives as
 * formatted; an event arrives as its text form without time and level
 * ("close client=127.0.0.1:5000 bytes_up=12"), whatever the format setting, unless a
 * structured sink is set.  `arg` is borrowed.
 */
MESHTLS_API void meshtls_log_set_sink(meshtls_log_fn fn, void *arg);
/**
 * Send events (meshtls_log_event) to `fn` instead of the text sink or stderr (NULL turns it
 * off).  `arg` is borrowed.
 */
MESHTLS_API void meshtls_log_set_event_sink(meshtls_log_event_fn fn, void *arg);
/** Log a free-text message. */
MESHTLS_API void meshtls_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/**
 * Log `event` (borrowed, not NULL) with the `n` fields at `f` (borrowed; may be NULL when `n`
 * is 0).  Never fails: a line that cannot be built whole is cut (see "Bounds" above).
 */
MESHTLS_API void meshtls_log_event(int level, const char *event, const struct meshtls_log_field *f,
                                   size_t n);

#ifdef __cplusplus
}
#endif
#endif
