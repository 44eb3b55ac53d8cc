/*
 * yamlev.h - internal: walking libyaml's event stream with errors that name
 * "FILE:LINE" (shared by the config loader and the policy file parser).
 * Aliases are refused: every document meshtls reads is plain data.
 */
#ifndef MESHTLS_YAMLEV_H
#define MESHTLS_YAMLEV_H

#include <stddef.h>

#include <yaml.h>

#include "meshtls/err.h"

struct mt_yaml {
    yaml_parser_t parser;
    yaml_event_t ev; /* the current event (valid while `have`) */
    int have;
    const char *name;        /* borrowed: the file name for messages */
    struct meshtls_err *err; /* borrowed */
};

/** Start reading `len` bytes of `buf` (borrowed until mt_yaml_close()). */
int mt_yaml_open(struct mt_yaml *y, const char *buf, size_t len, const char *name,
                 struct meshtls_err *err);
void mt_yaml_close(struct mt_yaml *y);
/** Advance to the next event; refuses aliases. */
int mt_yaml_next(struct mt_yaml *y);
/** Advance and require an event of type `t`; `what` describes it in the message. */
int mt_yaml_expect(struct mt_yaml *y, yaml_event_type_t t, const char *what);
/** 1-based line of the current event. */
size_t mt_yaml_line(const struct mt_yaml *y);
/** The current scalar's text (the current event must be a scalar). */
const char *mt_yaml_scalar(const struct mt_yaml *y);

#endif
