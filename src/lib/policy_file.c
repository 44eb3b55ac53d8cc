/*
 * policy_file.c - the YAML policy file (format in meshtls/policy.h), read
 * with libyaml's event parser.  A small recursive descent over events: the
 * shape is fixed (mapping -> sequence of one-key mappings), so nesting is
 * bounded by construction, and every error names the file and line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meshtls/policy.h"
#include "meshtls/x509.h"
#include "yamlev.h"

#define POLICY_FILE_MAX (1024 * 1024)
#define NAME_MAX_LEN 255

/* The parse state: the event walker plus where rules go. */
struct pf {
    struct mt_yaml y;
    struct meshtls_policy *p;
};

#define next(f) mt_yaml_next(&(f)->y)
#define line(f) mt_yaml_line(&(f)->y)
#define scalar(f) mt_yaml_scalar(&(f)->y)
#define expect(f, t, what) mt_yaml_expect(&(f)->y, t, what)

/* allow: [ {kind: value}, ... ] for `service` (NULL = any). */
static int parse_allow(struct pf *f, const char *service)
{
    int rc = expect(f, YAML_SEQUENCE_START_EVENT, "a list of rules under 'allow'");
    if (rc)
        return rc;
    for (;;) {
        if ((rc = next(f)) != 0)
            return rc;
        if (f->y.ev.type == YAML_SEQUENCE_END_EVENT)
            return 0;
        if (f->y.ev.type != YAML_MAPPING_START_EVENT)
            return meshtls_err_set(f->y.err, MESHTLS_EPARSE,
                                   "%s:%zu: each rule is a mapping such as '- uri: spiffe://...'",
                                   f->y.name, line(f));
        if ((rc = expect(f, YAML_SCALAR_EVENT,
                         "a rule kind (uri, cn, ou, dns, trust-domain, ip, email, "
                         "allow-all)")) != 0)
            return rc;
        size_t l = line(f);
        int kind = meshtls_rule_kind_parse(scalar(f));
        if (!kind)
            return meshtls_err_set(f->y.err, MESHTLS_EINVAL,
                                   "%s:%zu: unknown rule '%.64s' (use uri, cn, ou, dns, "
                                   "trust-domain, ip, email or allow-all)",
                                   f->y.name, l, scalar(f));
        if ((rc = expect(f, YAML_SCALAR_EVENT, "a value for the rule")) != 0)
            return rc;
        const char *v = scalar(f);
        if (kind == MESHTLS_RULE_ALLOW_ALL && strcmp(v, "true") != 0)
            return meshtls_err_set(f->y.err, MESHTLS_EINVAL,
                                   "%s:%zu: allow-all takes the value true", f->y.name, l);
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if ((rc = meshtls_policy_add(f->p, kind, kind == MESHTLS_RULE_ALLOW_ALL ? NULL : v, service,
                                     &e2)) != 0)
            return meshtls_err_set(f->y.err, rc, "%s:%zu: %s", f->y.name, l, e2.msg);
        if ((rc = expect(f, YAML_MAPPING_END_EVENT, "one key per rule (start a new '- ' item)")))
            return rc;
    }
}

static int parse_services(struct pf *f)
{
    char name[NAME_MAX_LEN + 1];
    int rc = expect(f, YAML_MAPPING_START_EVENT, "a mapping of service names under 'services'");
    if (rc)
        return rc;
    for (;;) {
        if ((rc = next(f)) != 0)
            return rc;
        if (f->y.ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (f->y.ev.type != YAML_SCALAR_EVENT || !*scalar(f) || strlen(scalar(f)) > NAME_MAX_LEN)
            return meshtls_err_set(f->y.err, MESHTLS_EPARSE, "%s:%zu: expected a service name",
                                   f->y.name, line(f));
        snprintf(name, sizeof(name), "%s", scalar(f));
        if ((rc = expect(f, YAML_MAPPING_START_EVENT, "a mapping with 'allow' under the service")))
            return rc;
        for (;;) {
            if ((rc = next(f)) != 0)
                return rc;
            if (f->y.ev.type == YAML_MAPPING_END_EVENT)
                break;
            if (f->y.ev.type != YAML_SCALAR_EVENT || strcmp(scalar(f), "allow") != 0)
                return meshtls_err_set(f->y.err, MESHTLS_EINVAL,
                                       "%s:%zu: unknown key under service '%s' (expected allow)",
                                       f->y.name, line(f), name);
            if ((rc = parse_allow(f, name)) != 0)
                return rc;
        }
    }
}

int meshtls_policy_load_buffer(struct meshtls_policy *p, const char *buf, size_t len,
                               const char *path, struct meshtls_err *err)
{
    struct pf f = {.p = p};
    int rc;
    if (len > POLICY_FILE_MAX)
        return meshtls_err_set(err, MESHTLS_EPARSE, "%s: larger than %d bytes",
                               path ? path : "(policy)", POLICY_FILE_MAX);
    if ((rc = mt_yaml_open(&f.y, buf, len, path ? path : "(policy)", err)) != 0)
        return rc;
    if ((rc = expect(&f, YAML_STREAM_START_EVENT, "a YAML stream")) ||
        (rc = expect(&f, YAML_DOCUMENT_START_EVENT, "a YAML document")) ||
        (rc = expect(&f, YAML_MAPPING_START_EVENT, "a mapping with 'allow' and/or 'services'")))
        goto out;
    for (;;) {
        if ((rc = next(&f)) != 0)
            goto out;
        if (f.y.ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (f.y.ev.type == YAML_SCALAR_EVENT && !strcmp(scalar(&f), "allow"))
            rc = parse_allow(&f, NULL);
        else if (f.y.ev.type == YAML_SCALAR_EVENT && !strcmp(scalar(&f), "services"))
            rc = parse_services(&f);
        else
            rc = meshtls_err_set(
                err, MESHTLS_EINVAL, "%s:%zu: unknown key '%.64s' (expected allow or services)",
                f.y.name, line(&f), f.y.ev.type == YAML_SCALAR_EVENT ? scalar(&f) : "?");
        if (rc)
            goto out;
    }
    if ((rc = expect(&f, YAML_DOCUMENT_END_EVENT, "the end of the document")) ||
        (rc = expect(&f, YAML_STREAM_END_EVENT, "a single YAML document")))
        goto out;
    if (meshtls_policy_size(p) == 0)
        rc = meshtls_err_set(err, MESHTLS_EINVAL, "%s: no rules: the policy would deny everyone",
                             f.y.name);
out:
    mt_yaml_close(&f.y);
    return rc;
}

int meshtls_policy_load_file(struct meshtls_policy *p, const char *path, struct meshtls_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = meshtls_read_file(path, POLICY_FILE_MAX, &buf, &len, err);
    if (rc == 0)
        rc = meshtls_policy_load_buffer(p, buf, len, path, err);
    free(buf);
    return rc;
}
