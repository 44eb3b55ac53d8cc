/*
 * log.c - the library's log: a level filter, text or JSON lines, typed event fields and
 * optional sinks.  The formats, the quoting rule and the bounds are written in
 * include/meshtls/log.h.
 *
 * Why each line is one write(2) on fd 2 under a mutex, with no buffering thread: the proxy
 * writes one line per connection and one per policy decision, and docs/PERFORMANCE.md ("Log
 * lines") measured the write at a small fraction of a TLS handshake; an async logger would
 * add a queue, a thread and lost lines on a crash to save less than that.  The mutex keeps
 * lines of several threads whole even when a line is longer than PIPE_BUF (a pipe then no
 * longer writes it atomically) and costs nothing measurable when uncontended.
 *
 * Lines are built in a MESHTLS_LOG_LINE_MAX buffer on the caller's stack (text) or by
 * jansson (JSON), so the log allocates only in JSON mode and never grows without bound.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "json_utf8.h"
#include "meshtls/log.h"

static atomic_int log_level = MESHTLS_LOG_INFO;
static atomic_int log_json;
/* Sinks are set at start-up, before threads log (log.h says so). */
static meshtls_log_fn log_sink;
static void *log_sink_arg;
static meshtls_log_event_fn log_event_sink;
static void *log_event_sink_arg;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Room kept at the end of a text line for `..."` + '\n' + NUL when it must be cut. */
#define CUT_RESERVE 6

void meshtls_log_set_level(int level)
{
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int meshtls_log_enabled(int level)
{
    return level >= atomic_load_explicit(&log_level, memory_order_relaxed);
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
    atomic_store_explicit(&log_json, json ? 1 : 0, memory_order_relaxed);
}

void meshtls_log_announce(const char *what, const char *addr)
{
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        json_t *o = json_object();
        if (o && !json_object_set_new(o, "announce", mt_json_string(what)) &&
            !json_object_set_new(o, "addr", mt_json_string(addr))) {
            char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (txt)
                printf("%s\n", txt);
            free(txt);
        }
        json_decref(o);
    } else {
        printf("%s on %s\n", what, addr);
    }
    fflush(stdout);
}

void meshtls_log_set_sink(meshtls_log_fn fn, void *arg)
{
    log_sink = fn;
    log_sink_arg = arg;
}

void meshtls_log_set_event_sink(meshtls_log_event_fn fn, void *arg)
{
    log_event_sink = fn;
    log_event_sink_arg = arg;
}

/* Write one whole line to stderr.  errno is the caller's: a log call never changes it. */
static void write_line(const char *p, size_t n)
{
    int saved = errno;
    pthread_mutex_lock(&write_lock);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN on a non-blocking stderr, EPIPE...: the line is lost, not retried */
        }
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&write_lock);
    errno = saved;
}

/* "2026-12-02T12:00:00.123Z" into ts (at least 32 bytes).  gmtime_r and strftime run once
 * a second per thread: the date part is kept in thread-local storage. */
static void timestamp(char *ts, size_t cap)
{
    static _Thread_local time_t last_sec = -1;
    static _Thread_local char last[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != last_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        if (strftime(last, sizeof(last), "%Y-%m-%dT%H:%M:%S", &tm) != 19)
            memcpy(last, "0000-00-00T00:00:00", 20); /* a year past 9999 */
        last_sec = now.tv_sec;
    }
    int ms = (int)(now.tv_nsec / 1000000);
    if (cap < 25)
        return;
    memcpy(ts, last, 19);
    ts[19] = '.';
    ts[20] = (char)('0' + ms / 100);
    ts[21] = (char)('0' + ms / 10 % 10);
    ts[22] = (char)('0' + ms % 10);
    ts[23] = 'Z';
    ts[24] = '\0';
}

static int clamp_level(int level)
{
    return level < 0 || level > 3 ? MESHTLS_LOG_ERROR : level;
}

/* ---- text lines ------------------------------------------------------------------------ */

/* A bounded line under construction: `lim` is where text stops so that a cut can still end
 * with `..."\n`. */
struct lbuf {
    char *p;
    size_t n, lim;
    int cut; /* set once something did not fit: nothing more is appended */
};

static int room(struct lbuf *b, size_t k)
{
    return !b->cut && b->n + k <= b->lim;
}

static void put_raw(struct lbuf *b, const char *s, size_t k)
{
    if (b->cut)
        return;
    if (!room(b, k)) {
        k = b->lim - b->n;
        b->cut = 1;
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
}

/* "TIME LEVEL " with the level padded to 5, as the text format starts every line. */
static void put_head(struct lbuf *b, const char *ts, int level)
{
    static const char *const padded[] = {"debug ", "info  ", "warn  ", "error "};
    put_raw(b, ts, strlen(ts));
    put_raw(b, " ", 1);
    put_raw(b, padded[level], 6);
}

/* Append `s` with control characters as \xNN (and, when `quoted`, `"` and `\` escaped).
 * Runs of bytes that pass unchanged are copied whole (this loop is most of a text line's
 * cost); a cut backs off to the start of a UTF-8 sequence, so it never splits a character.
 * @return 0, or -1 when the line was cut inside `s`. */
static int put_escaped(struct lbuf *b, const char *s, int quoted)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    if (b->cut)
        return -1;
    for (;;) {
        size_t k = 0;
        while (u[k] >= 0x20 && u[k] != 0x7f && !(quoted && (u[k] == '"' || u[k] == '\\')))
            k++; /* stops at the NUL too */
        if (b->n + k > b->lim) {
            size_t fit = b->lim - b->n;
            while (fit > 0 && (u[fit] & 0xc0) == 0x80)
                fit--;
            memcpy(b->p + b->n, u, fit);
            b->n += fit;
            b->cut = 1;
            return -1;
        }
        memcpy(b->p + b->n, u, k);
        b->n += k;
        u += k;
        if (!*u)
            return 0;
        char esc[4] = {'\\', (char)*u, 0, 0};
        size_t e = 2;
        if (*u < 0x20 || *u == 0x7f) {
            esc[1] = 'x';
            esc[2] = hex[*u >> 4];
            esc[3] = hex[*u & 15];
            e = 4;
        }
        if (b->n + e > b->lim) {
            b->cut = 1;
            return -1;
        }
        memcpy(b->p + b->n, esc, e);
        b->n += e;
        u++;
    }
}

/* Decimal digits of `v` into `out` (at least 21 bytes), NUL-terminated; snprintf's "%llu"
 * costs several times more and this runs for most fields. */
static void fmt_u64(char *out, unsigned long long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static void fmt_i64(char *out, long long v)
{
    if (v < 0) {
        *out++ = '-';
        fmt_u64(out, 0ULL - (unsigned long long)v); /* LLONG_MIN too */
    } else {
        fmt_u64(out, (unsigned long long)v);
    }
}

/* Whether a text value must be quoted to split reliably (log.h). */
static int needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        if (*u <= 0x20 || *u == 0x7f || *u == '"' || *u == '=' || *u == '\\')
            return 1;
    return 0;
}

/* Append " key=value" for one field. */
static void put_field(struct lbuf *b, const struct meshtls_log_field *f)
{
    char num[64];
    const char *s = num;
    switch (f->type) {
    case MESHTLS_LF_STR: s = f->v.s ? f->v.s : "-"; break;
    case MESHTLS_LF_INT: fmt_i64(num, f->v.i); break;
    case MESHTLS_LF_UINT: fmt_u64(num, f->v.u); break;
    case MESHTLS_LF_DBL: snprintf(num, sizeof(num), "%.15g", f->v.d); break;
    case MESHTLS_LF_BOOL: s = f->v.b ? "true" : "false"; break;
    default: s = "?"; break;
    }
    put_raw(b, " ", 1);
    put_escaped(b, f->key ? f->key : "?", 0);
    put_raw(b, "=", 1);
    if (b->cut)
        return;
    if (!needs_quotes(s)) {
        put_escaped(b, s, 0);
        return;
    }
    put_raw(b, "\"", 1);
    if (b->cut)
        return; /* not even the opening quote fit: finish() ends the line with "..." */
    if (put_escaped(b, s, 1) == 0) {
        /* the closing quote always goes in, past `lim` if need be (CUT_RESERVE holds it) */
        b->p[b->n++] = '"';
        if (b->n > b->lim)
            b->cut = 1;
    } else {
        /* cut inside the quotes: close them, so the line still splits (CUT_RESERVE) */
        memcpy(b->p + b->n, "...\"", 4);
        b->n += 4;
    }
}

/* End a line: `...` if it was cut (unless a cut value already said so), then '\n', NUL. */
static size_t finish(struct lbuf *b)
{
    if (b->cut && (b->n < 4 || memcmp(b->p + b->n - 4, "...\"", 4) != 0)) {
        memcpy(b->p + b->n, "...", 3);
        b->n += 3;
    }
    b->p[b->n++] = '\n';
    b->p[b->n] = '\0';
    return b->n;
}

/* The text form of an event into `line` (MESHTLS_LOG_LINE_MAX bytes), with the time and
 * level first when `ts` is not NULL.  @return its length including the newline. */
static size_t format_text(char *line, const char *ts, int level, const char *event,
                          const struct meshtls_log_field *f, size_t n)
{
    struct lbuf b = {line, 0, MESHTLS_LOG_LINE_MAX - CUT_RESERVE, 0};
    if (ts)
        put_head(&b, ts, level);
    put_escaped(&b, event ? event : "-", 0);
    for (size_t i = 0; i < n && !b.cut; i++)
        put_field(&b, &f[i]);
    return finish(&b);
}

/* ---- JSON lines ------------------------------------------------------------------------ */

static int reserved_key(const char *k)
{
    return !strcmp(k, "time") || !strcmp(k, "level") || !strcmp(k, "event") || !strcmp(k, "msg");
}

static json_t *field_value(const struct meshtls_log_field *f)
{
    switch (f->type) {
    case MESHTLS_LF_STR: return mt_json_string(f->v.s);
    case MESHTLS_LF_INT: return json_integer((json_int_t)f->v.i);
    case MESHTLS_LF_UINT:
        /* json_int_t is signed 64-bit: a value past INT64_MAX is written as a real */
        return f->v.u <= (unsigned long long)INT64_MAX ? json_integer((json_int_t)f->v.u)
                                                       : json_real((double)f->v.u);
    case MESHTLS_LF_DBL: return isfinite(f->v.d) ? json_real(f->v.d) : json_null();
    case MESHTLS_LF_BOOL: return json_boolean(f->v.b);
    default: return json_null();
    }
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

/* Dump `o` into `line` with a newline; shorten its longest strings until it fits
 * MESHTLS_LOG_LINE_MAX.  @return the length, or 0 if it cannot be made to fit. */
static size_t dump_bounded(json_t *o, char *line)
{
    const size_t cap = MESHTLS_LOG_LINE_MAX - 1; /* room for the newline */
    size_t limit = MESHTLS_LOG_LINE_MAX;
    for (int round = 0; round < 12; round++) {
        size_t k = json_dumpb(o, line, cap, DUMP_FLAGS);
        if (k > 0 && k <= cap) {
            line[k] = '\n';
            return k + 1;
        }
        if (k == 0)
            return 0;
        /* Too long: cut every string longer than `limit` (halved each round) to a whole
         * UTF-8 prefix plus "...". */
        limit /= 2;
        const char *key;
        json_t *v;
        int changed = 0;
        json_object_foreach(o, key, v)
        {
            if (!json_is_string(v) || !strcmp(key, "time") || !strcmp(key, "level"))
                continue;
            size_t len = json_string_length(v);
            if (len <= limit)
                continue;
            char cut[MESHTLS_LOG_LINE_MAX];
            size_t keep = mt_utf8_valid_prefix(json_string_value(v), limit);
            memcpy(cut, json_string_value(v), keep);
            memcpy(cut + keep, "...", 3);
            json_string_setn(v, cut, keep + 3);
            changed = 1;
        }
        if (changed)
            json_object_set_new(o, "truncated", json_true());
    }
    return 0;
}

/* Write the JSON line of an event (fields) or of free text (msg, when f is NULL). */
static void write_json(const char *ts, int level, const char *event, const char *msg,
                       const struct meshtls_log_field *f, size_t n)
{
    char line[MESHTLS_LOG_LINE_MAX];
    json_t *o = json_object();
    size_t len = 0;
    if (!o)
        goto fallback;
    json_object_set_new_nocheck(o, "time", json_string_nocheck(ts));
    json_object_set_new_nocheck(o, "level", json_string_nocheck(level_names[level]));
    if (event)
        json_object_set_new(o, "event", mt_json_string(event));
    else
        json_object_set_new(o, "msg", mt_json_string(msg));
    for (size_t i = 0; i < n; i++) {
        const char *k = f[i].key;
        size_t kl = k ? strlen(k) : 0;
        /* the first of a repeated key wins; reserved names stay ours; a key that is not UTF-8
         * is dropped (checked here once, so jansson need not again) */
        if (!k || reserved_key(k) || mt_utf8_valid_prefix(k, kl) != kl || json_object_get(o, k))
            continue;
        json_object_set_new_nocheck(o, k, field_value(&f[i]));
    }
    len = dump_bounded(o, line);
    json_decref(o);
    if (len == 0 && (o = json_object()) != NULL) {
        /* Too many fields to fit even with every string cut: keep what says what happened. */
        const char *what = event ? event : msg;
        json_object_set_new_nocheck(o, "time", json_string_nocheck(ts));
        json_object_set_new_nocheck(o, "level", json_string_nocheck(level_names[level]));
        json_object_set_new(o, event ? "event" : "msg",
                            mt_json_stringn(what, mt_utf8_valid_prefix(what, strnlen(what, 256))));
        json_object_set_new(o, "truncated", json_true());
        len = dump_bounded(o, line);
        json_decref(o);
    }
fallback:
    if (len == 0) /* out of memory: say so, still as valid JSON */
        len = (size_t)snprintf(line, sizeof(line),
                               "{\"time\":\"%s\",\"level\":\"%s\",\"event\":\"log_error\","
                               "\"reason\":\"line could not be formatted\"}\n",
                               ts, level_names[level]);
    write_line(line, len);
}

/* ---- the two calls --------------------------------------------------------------------- */

void meshtls_log(int level, const char *fmt, ...)
{
    if (!meshtls_log_enabled(level))
        return;
    level = clamp_level(level);
    char msg[MESHTLS_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_sink) {
        log_sink(level, msg, log_sink_arg);
        return;
    }
    char ts[40];
    timestamp(ts, sizeof(ts));
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        write_json(ts, level, NULL, msg, NULL, 0);
        return;
    }
    char line[MESHTLS_LOG_LINE_MAX];
    struct lbuf b = {line, 0, MESHTLS_LOG_LINE_MAX - CUT_RESERVE, 0};
    put_head(&b, ts, level);
    put_escaped(&b, msg, 0);
    write_line(line, finish(&b));
}

void meshtls_log_event(int level, const char *event, const struct meshtls_log_field *f, size_t n)
{
    if (!meshtls_log_enabled(level))
        return;
    level = clamp_level(level);
    if (!f)
        n = 0;
    if (log_event_sink) {
        log_event_sink(level, event ? event : "-", f, n, log_event_sink_arg);
        return;
    }
    char line[MESHTLS_LOG_LINE_MAX];
    if (log_sink) {
        size_t len = format_text(line, NULL, level, event, f, n);
        line[len - 1] = '\0'; /* the sink gets the message without its newline */
        log_sink(level, line, log_sink_arg);
        return;
    }
    char ts[40];
    timestamp(ts, sizeof(ts));
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        write_json(ts, level, event ? event : "-", NULL, f, n);
        return;
    }
    write_line(line, format_text(line, ts, level, event, f, n));
}
