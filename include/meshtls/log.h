/*
 * meshtls/log.h - the library's log: levels, text or JSON lines on stderr,
 * or a caller-supplied sink.  Keys and tokens are never passed to it.
 */
#ifndef MESHTLS_LOG_H
#define MESHTLS_LOG_H

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

/** A log sink: receives the level and the formatted message (borrowed). */
typedef void (*meshtls_log_fn)(int level, const char *msg, void *arg);

/** Drop messages below `level` (default INFO). */
MESHTLS_API void meshtls_log_set_level(int level);
/** Parse "debug|info|warn|error"; @return level or -1. */
MESHTLS_API int meshtls_log_level_parse(const char *s);
/** Write JSON lines instead of text when `json` is non-zero. */
MESHTLS_API void meshtls_log_set_json(int json);
/** Send messages to `fn` instead of stderr (NULL restores stderr). */
MESHTLS_API void meshtls_log_set_sink(meshtls_log_fn fn, void *arg);
/** Log a message. */
MESHTLS_API void meshtls_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
