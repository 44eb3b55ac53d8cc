/*
 * fuzz_log.c - log lines from peer-controlled values (SPIFFE IDs, subjects, reasons): in
 * text and JSON, every line is one line, within MESHTLS_LOG_LINE_MAX, with balanced quotes
 * in text and valid JSON in JSON mode.
 *
 * Input: byte 0 chooses the format (bit 0) and, per field, string or number (bits 1..7);
 * the rest is split at NUL bytes into up to 7 field values.  fd 2 points at a memfd only
 * during the call, so libFuzzer's own reports still reach the terminal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "meshtls/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {"client", "id", "serial", "rule", "reason", "bytes_up", "x"};

static void check_text(const char *out, size_t len)
{
    if (len == 0 || len > MESHTLS_LOG_LINE_MAX || memchr(out, '\n', len) != out + len - 1)
        abort(); /* one bounded line */
    int quotes = 0;
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '\\')
            i++;
        else if (out[i] == '"')
            quotes++;
    }
    if (quotes % 2)
        abort(); /* the line still splits */
}

static void check_json(const char *out, size_t len)
{
    if (len == 0 || len > MESHTLS_LOG_LINE_MAX || memchr(out, '\n', len) != out + len - 1)
        abort();
    json_t *j = json_loadb(out, len - 1, JSON_REJECT_DUPLICATES, NULL);
    if (!j || !json_is_object(j) || !json_is_string(json_object_get(j, "event")))
        abort(); /* every line is a valid JSON object */
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int mfd = -1;
    if (mfd < 0 && (mfd = memfd_create("fuzz_log", 0)) < 0)
        return 0;
    if (size < 1)
        return 0;
    int json = data[0] & 1;
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    struct meshtls_log_field f[7];
    size_t n = 0;
    for (char *p = buf, *end = buf + size - 1; n < 7 && p <= end; n++) {
        size_t len = strlen(p);
        if (data[0] & (2u << n)) {
            unsigned long long v = 0;
            memcpy(&v, p, len < sizeof(v) ? len : sizeof(v));
            f[n] = n % 2 ? MESHTLS_LF_U(keys[n], v) : MESHTLS_LF_D(keys[n], (double)(long long)v);
        } else {
            f[n] = MESHTLS_LF_S(keys[n], p);
        }
        p += len + 1;
    }
    if (ftruncate(mfd, 0) != 0 || lseek(mfd, 0, SEEK_SET) != 0) {
        free(buf);
        return 0;
    }
    int saved = dup(STDERR_FILENO);
    dup2(mfd, STDERR_FILENO);
    meshtls_log_set_json(json);
    meshtls_log_event(MESHTLS_LOG_ERROR, "fuzz", f, n);
    meshtls_log(MESHTLS_LOG_ERROR, "%s", n ? buf : "");
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t total = lseek(mfd, 0, SEEK_CUR);
    char *out = malloc((size_t)total + 1);
    if (out && total > 0 && pread(mfd, out, (size_t)total, 0) == total) {
        /* two lines: the event, then the free text */
        char *nl = memchr(out, '\n', (size_t)total);
        if (!nl)
            abort();
        size_t first = (size_t)(nl - out) + 1;
        if (json) {
            check_json(out, first);
        } else {
            check_text(out, first);
            size_t rest = (size_t)total - first;
            if (rest == 0 || rest > MESHTLS_LOG_LINE_MAX ||
                memchr(nl + 1, '\n', rest) != out + total - 1)
                abort(); /* free text is one bounded line too */
        }
    }
    free(out);
    free(buf);
    return 0;
}
