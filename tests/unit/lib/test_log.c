/*
 * test_log.c - src/lib/log.c as tables: each field type in text and JSON, the quoting rule,
 * bad UTF-8, level filtering, the line bound, sinks, and whole lines from several threads.
 * stderr is captured by pointing fd 2 at a temporary file.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "json_utf8.h"
#include "meshtls/log.h"

/* ---- capturing fd 2 ---------------------------------------------------------------------- */

static int saved_fd = -1;
static FILE *cap_file;

static void cap_begin(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    saved_fd = dup(STDERR_FILENO);
    dup2(fileno(cap_file), STDERR_FILENO);
}

/* @return what was written to fd 2 since cap_begin (caller frees). */
static char *cap_end(size_t *len)
{
    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    off_t end = lseek(fileno(cap_file), 0, SEEK_END);
    long n = (long)end;
    char *buf = calloc(1, (size_t)n + 1);
    if (pread(fileno(cap_file), buf, (size_t)n, 0) != n)
        buf[0] = '\0';
    fclose(cap_file);
    if (len)
        *len = (size_t)n;
    return buf;
}

/* The text after "TIME LEVEL " of a text line, checking the time's shape. */
static const char *after_head(const char *line, const char *level)
{
    /* 2026-12-02T12:00:00.123Z info  ... */
    if (strlen(line) < 31 || line[4] != '-' || line[10] != 'T' || line[23] != 'Z' ||
        line[24] != ' ' || strncmp(line + 25, level, strlen(level)) != 0)
        return "(bad head)";
    return line + 31;
}

/* ---- text ---------------------------------------------------------------------------------- */

static const struct {
    struct meshtls_log_field f;
    const char *want; /* the line after "TIME LEVEL ", without newline */
} text_cases[] = {
    {MESHTLS_LF_S("client", "127.0.0.1:5000"), "ev client=127.0.0.1:5000"},
    {MESHTLS_LF_S("id", "spiffe://example.org/svc/a"), "ev id=spiffe://example.org/svc/a"},
    {MESHTLS_LF_S("reason", "idle timeout"), "ev reason=\"idle timeout\""},
    {MESHTLS_LF_S("r", "a\"b"), "ev r=\"a\\\"b\""},
    {MESHTLS_LF_S("r", "a\\b"), "ev r=\"a\\\\b\""},
    {MESHTLS_LF_S("r", "a=b"), "ev r=\"a=b\""},
    {MESHTLS_LF_S("r", "a\nb"), "ev r=\"a\\x0ab\""},
    {MESHTLS_LF_S("r", "a\tb\x7f"), "ev r=\"a\\x09b\\x7f\""},
    {MESHTLS_LF_S("r", "\x1b[31mred"), "ev r=\"\\x1b[31mred\""},
    {MESHTLS_LF_S("r", ""), "ev r=\"\""},
    {MESHTLS_LF_S("id", NULL), "ev id=-"},
    {MESHTLS_LF_S("r", "caf\xc3\xa9"), "ev r=caf\xc3\xa9"},
    {MESHTLS_LF_S("r", "x\xff"), "ev r=x\xff"},
    {MESHTLS_LF_I("n", -5), "ev n=-5"},
    {MESHTLS_LF_I("n", LLONG_MIN), "ev n=-9223372036854775808"},
    {MESHTLS_LF_U("bytes_up", 12), "ev bytes_up=12"},
    {MESHTLS_LF_U("n", ULLONG_MAX), "ev n=18446744073709551615"},
    {MESHTLS_LF_D("duration_ms", 3.2), "ev duration_ms=3.2"},
    {MESHTLS_LF_D("d", 0.1 + 0.2), "ev d=0.3"},
    {MESHTLS_LF_D("d", 1e20), "ev d=1e+20"},
    {MESHTLS_LF_D("d", 12.0), "ev d=12"},
    {MESHTLS_LF_B("ok", 1), "ev ok=true"},
    {MESHTLS_LF_B("ok", 0), "ev ok=false"},
};

TEST(text_fields)
{
    meshtls_log_set_json(0);
    for (size_t i = 0; i < sizeof(text_cases) / sizeof(text_cases[0]); i++) {
        cap_begin();
        meshtls_log_event(MESHTLS_LOG_INFO, "ev", &text_cases[i].f, 1);
        size_t len;
        char *out = cap_end(&len);
        CHECK(len > 0 && out[len - 1] == '\n');
        CHECK(strchr(out, '\n') == out + len - 1); /* one line */
        if (len)
            out[len - 1] = '\0';
        CHECK_STR_EQ(after_head(out, "info"), text_cases[i].want);
        free(out);
    }
}

TEST(text_event_macro)
{
    meshtls_log_set_json(0);
    cap_begin();
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "close", MESHTLS_LF_S("client", "127.0.0.1:5000"),
                      MESHTLS_LF_S("id", "spiffe://td/svc/a"), MESHTLS_LF_U("bytes_up", 12),
                      MESHTLS_LF_D("duration_ms", 3.25), MESHTLS_LF_S("reason", "idle timeout"));
    meshtls_log_event(MESHTLS_LOG_INFO, "listen", NULL, 0);
    char *out = cap_end(NULL);
    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    if (nl) {
        *nl = '\0';
        CHECK_STR_EQ(after_head(out, "warn "),
                     "close client=127.0.0.1:5000 id=spiffe://td/svc/a bytes_up=12 "
                     "duration_ms=3.25 reason=\"idle timeout\"");
        CHECK_STR_EQ(after_head(nl + 1, "info "), "listen\n");
    }
    free(out);
}

TEST(text_free)
{
    meshtls_log_set_json(0);
    cap_begin();
    meshtls_log(MESHTLS_LOG_ERROR, "cannot open %s: %s", "a\nb.pem", "No such file");
    char *out = cap_end(NULL);
    CHECK_STR_EQ(after_head(out, "error"), "cannot open a\\x0ab.pem: No such file\n");
    free(out);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static json_t *parse_line(const char *out)
{
    json_error_t je;
    size_t len = strlen(out);
    if (len == 0 || out[len - 1] != '\n' || strchr(out, '\n') != out + len - 1)
        return NULL;
    json_t *j = json_loadb(out, len - 1, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        fprintf(stderr, "bad JSON (%s): %s", je.text, out);
    return j;
}

enum want_kind { W_STR, W_INT, W_REAL, W_BOOL, W_NULL };

static const struct {
    struct meshtls_log_field f;
    enum want_kind kind;
    const char *s; /* W_STR */
    long long i;   /* W_INT, W_BOOL */
    double d;      /* W_REAL */
} json_cases[] = {
    {MESHTLS_LF_S("client", "127.0.0.1:5000"), W_STR, "127.0.0.1:5000", 0, 0},
    {MESHTLS_LF_S("reason", "idle timeout \"x\" \\ y"), W_STR, "idle timeout \"x\" \\ y", 0, 0},
    {MESHTLS_LF_S("r", "a\nb\x01"), W_STR, "a\nb\x01", 0, 0},
    {MESHTLS_LF_S("r", "caf\xc3\xa9 \xf0\x9f\x94\x92"), W_STR, "caf\xc3\xa9 \xf0\x9f\x94\x92", 0,
     0},
    {MESHTLS_LF_S("r", "x\xff"), W_STR, "x\xef\xbf\xbd", 0, 0},
    {MESHTLS_LF_S("r", "\xc3"), W_STR, "\xef\xbf\xbd", 0, 0},                 /* cut short */
    {MESHTLS_LF_S("r", "\xc0\xaf"), W_STR, "\xef\xbf\xbd\xef\xbf\xbd", 0, 0}, /* overlong */
    {MESHTLS_LF_S("r", "\xed\xa0\x80"), W_STR, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0, 0},
    {MESHTLS_LF_S("r", ""), W_STR, "", 0, 0},
    {MESHTLS_LF_S("id", NULL), W_NULL, NULL, 0, 0},
    {MESHTLS_LF_I("n", -5), W_INT, NULL, -5, 0},
    {MESHTLS_LF_I("n", LLONG_MIN), W_INT, NULL, LLONG_MIN, 0},
    {MESHTLS_LF_U("bytes_up", 12), W_INT, NULL, 12, 0},
    {MESHTLS_LF_U("n", ULLONG_MAX), W_REAL, NULL, 0, 18446744073709551615.0},
    {MESHTLS_LF_D("duration_ms", 3.2), W_REAL, NULL, 0, 3.2},
    {MESHTLS_LF_D("d", NAN), W_NULL, NULL, 0, 0},
    {MESHTLS_LF_D("d", INFINITY), W_NULL, NULL, 0, 0},
    {MESHTLS_LF_B("ok", 1), W_BOOL, NULL, 1, 0},
    {MESHTLS_LF_B("ok", 0), W_BOOL, NULL, 0, 0},
};

TEST(json_fields)
{
    meshtls_log_set_json(1);
    for (size_t i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
        cap_begin();
        meshtls_log_event(MESHTLS_LOG_INFO, "ev", &json_cases[i].f, 1);
        char *out = cap_end(NULL);
        json_t *j = parse_line(out);
        CHECK(j != NULL);
        if (!j) {
            free(out);
            continue;
        }
        CHECK_INT_EQ(json_object_size(j), 4);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "level")), "info");
        CHECK_STR_EQ(json_string_value(json_object_get(j, "event")), "ev");
        const char *t = json_string_value(json_object_get(j, "time"));
        CHECK(t && strlen(t) == 24 && t[23] == 'Z');
        json_t *v = json_object_get(j, json_cases[i].f.key);
        CHECK(v != NULL);
        switch (json_cases[i].kind) {
        case W_STR: CHECK_STR_EQ(json_string_value(v), json_cases[i].s); break;
        case W_INT:
            CHECK(json_is_integer(v));
            CHECK_INT_EQ(json_integer_value(v), json_cases[i].i);
            break;
        case W_REAL: /* 15 significant digits, as written */
            CHECK(json_is_real(v) &&
                  fabs(json_real_value(v) - json_cases[i].d) <= 1e-14 * json_cases[i].d);
            break;
        case W_BOOL: CHECK(json_is_boolean(v) && json_is_true(v) == json_cases[i].i); break;
        case W_NULL: CHECK(json_is_null(v)); break;
        }
        if (check_failures)
            fprintf(stderr, "  case %zu: %s", i, out);
        json_decref(j);
        free(out);
    }
    meshtls_log_set_json(0);
}

TEST(json_free_and_reserved)
{
    meshtls_log_set_json(1);
    cap_begin();
    meshtls_log(MESHTLS_LOG_WARN, "cannot open %s", "a\"b\n\xff");
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "close", MESHTLS_LF_S("time", "evil"),
                      MESHTLS_LF_S("level", "debug"), MESHTLS_LF_S("msg", "x"),
                      MESHTLS_LF_U("n", 1), MESHTLS_LF_U("n", 2));
    char *out = cap_end(NULL);
    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    if (nl) {
        char save = nl[1];
        nl[1] = '\0';
        json_t *a = parse_line(out);
        nl[1] = save;
        json_t *b = parse_line(nl + 1);
        CHECK(a && b);
        if (a) {
            CHECK_INT_EQ(json_object_size(a), 3);
            CHECK_STR_EQ(json_string_value(json_object_get(a, "level")), "warn");
            CHECK_STR_EQ(json_string_value(json_object_get(a, "msg")),
                         "cannot open a\"b\n\xef\xbf\xbd");
        }
        if (b) {
            CHECK_INT_EQ(json_object_size(b), 4); /* time, level, event, n */
            CHECK_STR_EQ(json_string_value(json_object_get(b, "level")), "info");
            CHECK(strcmp(json_string_value(json_object_get(b, "time")), "evil") != 0);
            CHECK_INT_EQ(json_integer_value(json_object_get(b, "n")), 1);
        }
        json_decref(a);
        json_decref(b);
        /* member order is the order given: time, level, event first */
        CHECK(strncmp(nl + 1, "{\"time\":", 8) == 0);
        CHECK(strstr(nl + 1, "\"level\":\"info\",\"event\":\"close\",\"n\":1}") != NULL);
    }
    free(out);
    meshtls_log_set_json(0);
}

/* ---- levels, bounds, sinks ------------------------------------------------------------------- */

TEST(level_filter)
{
    meshtls_log_set_level(MESHTLS_LOG_WARN);
    CHECK(!meshtls_log_enabled(MESHTLS_LOG_INFO));
    CHECK(meshtls_log_enabled(MESHTLS_LOG_WARN));
    cap_begin();
    meshtls_log(MESHTLS_LOG_INFO, "dropped");
    MESHTLS_LOG_EVENT(MESHTLS_LOG_DEBUG, "dropped", MESHTLS_LF_U("n", 1));
    meshtls_log(MESHTLS_LOG_WARN, "kept");
    MESHTLS_LOG_EVENT(MESHTLS_LOG_ERROR, "kept2", MESHTLS_LF_U("n", 1));
    meshtls_log(MESHTLS_LOG_INFO - 10, "dropped");
    meshtls_log(MESHTLS_LOG_ERROR + 5, "out of range counts as error");
    char *out = cap_end(NULL);
    CHECK(strstr(out, "dropped") == NULL);
    CHECK(strstr(out, "warn  kept\n") != NULL);
    CHECK(strstr(out, "error kept2 n=1\n") != NULL);
    CHECK(strstr(out, "error out of range") != NULL);
    free(out);
    meshtls_log_set_level(MESHTLS_LOG_INFO);
    CHECK_INT_EQ(meshtls_log_level_parse("debug"), MESHTLS_LOG_DEBUG);
    CHECK_INT_EQ(meshtls_log_level_parse("warning"), MESHTLS_LOG_WARN);
    CHECK_INT_EQ(meshtls_log_level_parse("loud"), -1);
    CHECK_INT_EQ(meshtls_log_level_parse(NULL), -1);
}

static int valid_utf8(const char *s, size_t n)
{
    return mt_utf8_valid_prefix(s, n) == n;
}

TEST(long_values)
{
    size_t big = 3 * MESHTLS_LOG_LINE_MAX;
    char *plain = malloc(big + 1), *spaced = malloc(big + 1), *utf = malloc(big + 1);
    memset(plain, 'a', big);
    plain[big] = '\0';
    memcpy(spaced, plain, big + 1);
    spaced[10] = ' ';
    for (size_t i = 0; i + 2 <= big; i += 2)
        memcpy(utf + i, "\xc3\xa9", 2);
    utf[big] = '\0';
    const char *vals[] = {plain, spaced, utf};
    for (int json = 0; json <= 1; json++) {
        meshtls_log_set_json(json);
        for (size_t v = 0; v < 3; v++) {
            for (size_t off = 0; off < 8; off++) { /* shift the cut point through a character */
                cap_begin();
                MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "ev", MESHTLS_LF_S("pad", plain + big - off),
                                  MESHTLS_LF_S("v", vals[v]), MESHTLS_LF_U("after", 7));
                size_t len;
                char *out = cap_end(&len);
                CHECK(len <= MESHTLS_LOG_LINE_MAX && len > MESHTLS_LOG_LINE_MAX / 2);
                CHECK(strchr(out, '\n') == out + len - 1);
                CHECK(valid_utf8(out, len));
                if (json) {
                    json_t *j = parse_line(out);
                    CHECK(j != NULL);
                    CHECK(json_is_true(json_object_get(j, "truncated")));
                    const char *s = json_string_value(json_object_get(j, "v"));
                    CHECK(s && strlen(s) > 3 && !strcmp(s + strlen(s) - 3, "..."));
                    CHECK_INT_EQ(json_integer_value(json_object_get(j, "after")), 7);
                    json_decref(j);
                } else {
                    CHECK(strstr(out, "after=") == NULL);
                    CHECK(len > 5 && (!memcmp(out + len - 5, "...\"\n", 5) ||
                                      !memcmp(out + len - 4, "...\n", 4)));
                    if (v == 1) /* a quoted value cut still closes its quotes */
                        CHECK(!memcmp(out + len - 5, "...\"\n", 5));
                }
                free(out);
            }
        }
    }
    /* too many fields for any cut of the strings: JSON keeps time, level, event */
    struct meshtls_log_field *many = calloc(2000, sizeof(*many));
    char keys[2000][8];
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        many[i] = MESHTLS_LF_U(keys[i], 1000000 + i);
    }
    for (int json = 0; json <= 1; json++) {
        meshtls_log_set_json(json);
        cap_begin();
        meshtls_log_event(MESHTLS_LOG_INFO, "many", many, 2000);
        meshtls_log(MESHTLS_LOG_INFO, "%s", spaced);
        size_t len;
        char *out = cap_end(&len);
        char *nl = strchr(out, '\n');
        CHECK(nl && nl - out < MESHTLS_LOG_LINE_MAX);
        CHECK(nl && strlen(nl + 1) <= MESHTLS_LOG_LINE_MAX);
        if (json && nl) {
            nl[1] = '\0';
            json_t *j = parse_line(out);
            CHECK(j && json_is_true(json_object_get(j, "truncated")));
            CHECK_STR_EQ(json_string_value(json_object_get(j, "event")), "many");
            json_decref(j);
        }
        free(out);
    }
    meshtls_log_set_json(0);
    free(many);
    free(plain);
    free(spaced);
    free(utf);
}

/* Every cut point near the end of a text line: the line stays bounded, one line, and its
 * quotes balanced (so it still splits), whether the cut falls in a key, before an opening
 * quote, inside a quoted value or in a bare one. */
TEST(text_cut_sweep)
{
    char *pad = malloc(MESHTLS_LOG_LINE_MAX + 1);
    meshtls_log_set_json(0);
    for (size_t L = MESHTLS_LOG_LINE_MAX - 90; L <= MESHTLS_LOG_LINE_MAX; L++) {
        memset(pad, 'a', L);
        pad[L] = '\0';
        cap_begin();
        MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "ev", MESHTLS_LF_S("pad", pad),
                          MESHTLS_LF_S("reason", "x \"y\" z"), MESHTLS_LF_U("n", 5),
                          MESHTLS_LF_S("q", "a b"));
        size_t len;
        char *out = cap_end(&len);
        CHECK(len <= MESHTLS_LOG_LINE_MAX);
        CHECK(len > 0 && strchr(out, '\n') == out + len - 1);
        int quotes = 0;
        for (size_t i = 0; i < len; i++) {
            if (out[i] == '\\')
                i++;
            else if (out[i] == '"')
                quotes++;
        }
        CHECK(quotes % 2 == 0);
        int whole = strstr(out, " q=\"a b\"\n") != NULL;
        CHECK(whole || (len >= 4 && !memcmp(out + len - 4, "...\n", 4)) ||
              (len >= 5 && !memcmp(out + len - 5, "...\"\n", 5)));
        if (check_failures) {
            fprintf(stderr, "L=%zu: ...%s", L, out + (len > 120 ? len - 120 : 0));
            free(out);
            break;
        }
        free(out);
    }
    free(pad);
}

static char sink_buf[256];
static int sink_level = -1;
static void text_sink(int level, const char *msg, void *arg)
{
    (void)arg;
    sink_level = level;
    snprintf(sink_buf, sizeof(sink_buf), "%s", msg);
}

static size_t ev_n;
static unsigned long long ev_u;
static void event_sink(int level, const char *event, const struct meshtls_log_field *f, size_t n,
                       void *arg)
{
    (void)level;
    *(const char **)arg = event;
    ev_n = n;
    ev_u = n > 1 && f[1].type == MESHTLS_LF_UINT ? f[1].v.u : 0;
}

TEST(sinks)
{
    meshtls_log_set_json(1); /* the text sink gets text whatever the format */
    meshtls_log_set_sink(text_sink, NULL);
    cap_begin();
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "close", MESHTLS_LF_S("client", "1.2.3.4:5"),
                      MESHTLS_LF_S("reason", "a b"));
    CHECK_STR_EQ(sink_buf, "close client=1.2.3.4:5 reason=\"a b\"");
    CHECK_INT_EQ(sink_level, MESHTLS_LOG_WARN);
    meshtls_log(MESHTLS_LOG_INFO, "free %d", 1);
    CHECK_STR_EQ(sink_buf, "free 1");
    const char *got = NULL;
    meshtls_log_set_event_sink(event_sink, &got);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "audit", MESHTLS_LF_S("decision", "allow"),
                      MESHTLS_LF_U("bytes_up", 99));
    CHECK_STR_EQ(got, "audit");
    CHECK_INT_EQ(ev_n, 2);
    CHECK_INT_EQ(ev_u, 99);
    CHECK_STR_EQ(sink_buf, "free 1"); /* the event went to the event sink only */
    meshtls_log_set_event_sink(NULL, NULL);
    meshtls_log_set_sink(NULL, NULL);
    char *out = cap_end(NULL);
    CHECK_STR_EQ(out, ""); /* nothing reached stderr */
    free(out);
    meshtls_log_set_json(0);
}

TEST(errno_kept)
{
    cap_begin();
    errno = ERANGE;
    meshtls_log(MESHTLS_LOG_INFO, "x");
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "y", MESHTLS_LF_U("n", 1));
    int e = errno;
    free(cap_end(NULL));
    CHECK_INT_EQ(e, ERANGE);
}

/* ---- threads: every line whole, even past PIPE_BUF ------------------------------------------- */

#define THREADS 4
#define LINES 200

static char *long_value;

static void *logger(void *arg)
{
    for (unsigned long long i = 0; i < LINES; i++)
        MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "t", MESHTLS_LF_U("thread", (uintptr_t)arg),
                          MESHTLS_LF_U("i", i), MESHTLS_LF_S("v", long_value));
    return NULL;
}

TEST(threads_whole_lines)
{
    long_value = malloc(6001);
    memset(long_value, 'x', 6000); /* past PIPE_BUF (4096) */
    long_value[6000] = '\0';
    for (int json = 0; json <= 1; json++) {
        meshtls_log_set_json(json);
        cap_begin();
        pthread_t t[THREADS];
        for (uintptr_t i = 0; i < THREADS; i++)
            pthread_create(&t[i], NULL, logger, (void *)i);
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
        size_t len;
        char *out = cap_end(&len);
        int lines = 0, bad = 0;
        for (char *p = out, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
            lines++;
            *nl = '\0';
            if (json) {
                json_t *j = json_loads(p, 0, NULL);
                if (!j || strlen(json_string_value(json_object_get(j, "v"))) != 6000)
                    bad++;
                json_decref(j);
            } else if (!strstr(p, " v=x") || strlen(strstr(p, " v=x")) != 6003) {
                bad++;
            }
        }
        CHECK_INT_EQ(lines, THREADS * LINES);
        CHECK_INT_EQ(bad, 0);
        free(out);
    }
    meshtls_log_set_json(0);
    free(long_value);
}

int main(void)
{
    RUN(text_fields);
    RUN(text_event_macro);
    RUN(text_free);
    RUN(json_fields);
    RUN(json_free_and_reserved);
    RUN(level_filter);
    RUN(long_values);
    RUN(text_cut_sweep);
    RUN(sinks);
    RUN(errno_kept);
    RUN(threads_whole_lines);
    return check_summary();
}
