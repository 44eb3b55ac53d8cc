/*
 * log.c - the library's log: a level filter, text or JSON lines, and an
 * optional sink.  One line per call, written with a single fputs so lines
 * from several threads do not interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meshtls/log.h"

static int log_level = MESHTLS_LOG_INFO;
static int log_json;
static meshtls_log_fn log_sink;
static void *log_sink_arg;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void meshtls_log_set_level(int level)
{
    log_level = level;
}

int meshtls_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, level_names[i]))
            return i;
    if (s && !strcmp(s, "warning"))
        return MESHTLS_LOG_WARN;
    return -1;
}

void meshtls_log_set_json(int json)
{
    log_json = json;
}

void meshtls_log_set_sink(meshtls_log_fn fn, void *arg)
{
    log_sink = fn;
    log_sink_arg = arg;
}

/* Append `s` to `out` (capacity `cap`, used `*n`) as JSON string content. */
static void json_escape(char *out, size_t cap, size_t *n, const char *s)
{
    for (; *s && *n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c < 0x20) {
            *n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", c);
        } else {
            out[(*n)++] = (char)c;
        }
    }
    out[*n] = '\0';
}

void meshtls_log(int level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    if (level < 0 || level > 3)
        level = MESHTLS_LOG_ERROR;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_sink) {
        log_sink(level, msg, log_sink_arg);
        return;
    }
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    char line[4096];
    size_t n;
    if (log_json) {
        n = (size_t)snprintf(line, sizeof(line),
                             "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", ts,
                             now.tv_nsec / 1000000, level_names[level]);
        json_escape(line, sizeof(line) - 3, &n, msg);
        memcpy(line + n, "\"}\n", 4);
    } else {
        snprintf(line, sizeof(line), "%s.%03ldZ %-5s %s\n", ts, now.tv_nsec / 1000000,
                 level_names[level], msg);
    }
    fputs(line, stderr);
}
