/* yamlev.c - libyaml event walking with located errors (see yamlev.h). */
#include <string.h>

#include "yamlev.h"

int mt_yaml_open(struct mt_yaml *y, const char *buf, size_t len, const char *name,
                 struct meshtls_err *err)
{
    memset(y, 0, sizeof(*y));
    y->name = name;
    y->err = err;
    if (!yaml_parser_initialize(&y->parser))
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&y->parser, (const unsigned char *)buf, len);
    return 0;
}

void mt_yaml_close(struct mt_yaml *y)
{
    if (y->have)
        yaml_event_delete(&y->ev);
    y->have = 0;
    yaml_parser_delete(&y->parser);
}

int mt_yaml_next(struct mt_yaml *y)
{
    if (y->have)
        yaml_event_delete(&y->ev);
    y->have = 0;
    if (!yaml_parser_parse(&y->parser, &y->ev))
        return meshtls_err_set(y->err, MESHTLS_EPARSE, "%s:%zu: YAML syntax error: %s", y->name,
                               y->parser.problem_mark.line + 1,
                               y->parser.problem ? y->parser.problem : "unknown");
    y->have = 1;
    if (y->ev.type == YAML_ALIAS_EVENT)
        return meshtls_err_set(y->err, MESHTLS_EPARSE, "%s:%zu: YAML aliases are not allowed",
                               y->name, mt_yaml_line(y));
    return 0;
}

int mt_yaml_expect(struct mt_yaml *y, yaml_event_type_t t, const char *what)
{
    int rc = mt_yaml_next(y);
    if (!rc && y->ev.type != t)
        rc = meshtls_err_set(y->err, MESHTLS_EPARSE, "%s:%zu: expected %s", y->name,
                             mt_yaml_line(y), what);
    return rc;
}

size_t mt_yaml_line(const struct mt_yaml *y)
{
    return y->ev.start_mark.line + 1;
}

const char *mt_yaml_scalar(const struct mt_yaml *y)
{
    return (const char *)y->ev.data.scalar.value;
}
