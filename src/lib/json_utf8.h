/*
 * json_utf8.h - JSON strings from bytes that may not be UTF-8 (internal to meshtls).
 *
 * jansson's json_string() refuses a string that is not valid UTF-8 and returns NULL, so a
 * certificate subject, a file name or a peer-supplied value with one stray byte would
 * silently vanish from a log line or a command's output.  These replace each invalid byte by
 * U+FFFD (the Unicode replacement character) instead, so the output is always valid JSON
 * and says that something was there.
 */
#ifndef MESHTLS_JSON_UTF8_H
#define MESHTLS_JSON_UTF8_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/**
 * A new JSON string holding the `len` bytes at `s` (NUL bytes also become U+FFFD), or
 * json_null() when `s` is NULL.  @return a new reference (caller json_decref()s it), or NULL
 * when out of memory.
 */
json_t *mt_json_stringn(const char *s, size_t len);

/** mt_json_stringn() of a NUL-terminated `s` (NULL gives json_null()). */
json_t *mt_json_string(const char *s);

/**
 * Write `j` to `f` as compact JSON (members in insertion order) and a newline, then
 * json_decref() it (it takes `j`, which may be NULL when building it ran out of memory).
 * @return 0, or -1 when `j` is NULL or the write failed.
 */
int mt_json_print(json_t *j, FILE *f);

/**
 * The length of the longest prefix of the `len` bytes at `s` that is valid UTF-8 and does not
 * end inside a character; used to cut a string without splitting a character.
 */
size_t mt_utf8_valid_prefix(const char *s, size_t len);

/**
 * Length of the valid UTF-8 sequence at `s` (at most `len` bytes available), or 0 when the
 * byte at `s` does not start one (overlong forms, surrogates and values past U+10FFFF are
 * invalid, as in RFC 3629).
 */
size_t mt_utf8_seq_len(const unsigned char *s, size_t len);

#endif
