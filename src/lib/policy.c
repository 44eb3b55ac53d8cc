/*
 * policy.c - identity allow-lists (see meshtls/policy.h).
 *
 * Rules live in one array, checked in order; the first match allows.  With
 * no match the decision says what the peer presented, so a denied caller
 * can be recognised in the audit log.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meshtls/policy.h"
#include "meshtls/spiffe.h"

#define MAX_RULES 4096
#define MAX_VALUE 2048

struct rule {
    enum meshtls_rule_kind kind;
    char *value;   /* owned */
    char *service; /* owned; NULL = any local service */
};

struct meshtls_policy {
    struct rule *rules;
    size_t n, cap;
};

static const char *const kind_names[] = {
    [MESHTLS_RULE_ALLOW_ALL] = "allow-all",
    [MESHTLS_RULE_CN] = "cn",
    [MESHTLS_RULE_OU] = "ou",
    [MESHTLS_RULE_DNS] = "dns",
    [MESHTLS_RULE_URI] = "uri",
    [MESHTLS_RULE_TRUST_DOMAIN] = "trust-domain",
    [MESHTLS_RULE_IP] = "ip",
    [MESHTLS_RULE_EMAIL] = "email",
};

#define RULE_LAST MESHTLS_RULE_EMAIL

int meshtls_rule_kind_parse(const char *s)
{
    for (int k = MESHTLS_RULE_ALLOW_ALL; k <= RULE_LAST; k++)
        if (s && !strcmp(s, kind_names[k]))
            return k;
    return 0;
}

int meshtls_policy_new(struct meshtls_policy **out)
{
    struct meshtls_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return MESHTLS_ENOMEM;
    *out = p;
    return 0;
}

void meshtls_policy_free(struct meshtls_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->rules[i].value);
        free(p->rules[i].service);
    }
    free(p->rules);
    free(p);
}

size_t meshtls_policy_size(const struct meshtls_policy *p)
{
    return p ? p->n : 0;
}

/* "scheme:rest" with an RFC 3986 scheme, no wildcard, no space: an exact URI rule. */
static int is_plain_uri(const char *v)
{
    size_t i = 0;
    if (!((v[0] >= 'a' && v[0] <= 'z') || (v[0] >= 'A' && v[0] <= 'Z')))
        return 0;
    while (v[i] && v[i] != ':') {
        char ch = v[i++];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '-' || ch == '.'))
            return 0;
    }
    if (v[i] != ':' || !v[i + 1])
        return 0;
    for (; v[i]; i++)
        if (v[i] == '*' || (unsigned char)v[i] <= ' ' || v[i] == 0x7f)
            return 0;
    return 1;
}

/* An address or CIDR: "10.0.0.0/8", "192.0.2.7", "2001:db8::/32".  Writes the family, the
 * address bytes and the prefix length.  @return 0 or -1. */
static int parse_cidr(const char *v, int *af, unsigned char addr[16], int *bits)
{
    char buf[64];
    const char *slash = strchr(v, '/');
    size_t n = slash ? (size_t)(slash - v) : strlen(v);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    *af = strchr(buf, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(*af, buf, addr) != 1)
        return -1;
    int max = *af == AF_INET ? 32 : 128;
    *bits = max;
    if (slash) {
        int b = 0;
        const char *q = slash + 1;
        if (!*q || strlen(q) > 3)
            return -1;
        for (; *q; q++) {
            if (*q < '0' || *q > '9')
                return -1;
            b = b * 10 + (*q - '0');
        }
        if (b > max)
            return -1;
        *bits = b;
    }
    return 0;
}

static int ip_in(const char *cidr, const char *ip)
{
    int af, bits, af2, bits2;
    unsigned char net[16], a[16];
    if (parse_cidr(cidr, &af, net, &bits) != 0 || parse_cidr(ip, &af2, a, &bits2) != 0 || af != af2)
        return 0;
    int full = bits / 8, rest = bits % 8;
    if (memcmp(net, a, (size_t)full) != 0)
        return 0;
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        return (net[full] & mask) == (a[full] & mask);
    }
    return 1;
}

/* A URI rule: a SPIFFE ID, where a segment may be "*" or a final "**". */
static int check_uri_pattern(const char *v, struct meshtls_err *err)
{
    if (strncmp(v, "spiffe://", 9) != 0 && is_plain_uri(v))
        return 0; /* any other URI: matched exactly (wildcards are for SPIFFE IDs only) */
    char probe[MESHTLS_SPIFFE_ID_MAX + 1];
    size_t n = strlen(v), j = 0;
    if (n > MESHTLS_SPIFFE_ID_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "rule uri: longer than %d bytes",
                               MESHTLS_SPIFFE_ID_MAX);
    /* Replace each wildcard segment by a letter, then validate as an ID. */
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '*' && (i == 0 || v[i - 1] == '/')) {
            size_t w = (i + 1 < n && v[i + 1] == '*') ? 2 : 1;
            if (i + w < n && v[i + w] != '/')
                return meshtls_err_set(err, MESHTLS_EINVAL,
                                       "rule uri '%s': '*' must be a whole path segment", v);
            if (w == 2 && i + w != n)
                return meshtls_err_set(err, MESHTLS_EINVAL,
                                       "rule uri '%s': '**' may only be the last segment", v);
            probe[j++] = 'x';
            i += w - 1;
        } else {
            probe[j++] = v[i];
        }
    }
    struct meshtls_spiffe_id id;
    struct meshtls_err e2 = MESHTLS_ERR_INIT;
    if (meshtls_spiffe_parse(probe, j, &id, &e2) != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "rule uri '%s': %s", v, e2.msg);
    return 0;
}

int meshtls_policy_add(struct meshtls_policy *p, enum meshtls_rule_kind kind, const char *value,
                       const char *service, struct meshtls_err *err)
{
    if (kind < MESHTLS_RULE_ALLOW_ALL || kind > RULE_LAST)
        return meshtls_err_set(err, MESHTLS_EINVAL, "unknown rule kind %d", (int)kind);
    if (kind != MESHTLS_RULE_ALLOW_ALL) {
        if (!value || !*value)
            return meshtls_err_set(err, MESHTLS_EINVAL, "rule %s needs a value", kind_names[kind]);
        if (strlen(value) > MAX_VALUE)
            return meshtls_err_set(err, MESHTLS_EINVAL, "rule %s: value too long",
                                   kind_names[kind]);
    }
    int rc = 0;
    if (kind == MESHTLS_RULE_URI)
        rc = check_uri_pattern(value, err);
    else if (kind == MESHTLS_RULE_TRUST_DOMAIN)
        rc = meshtls_trust_domain_validate(value, err);
    else if (kind == MESHTLS_RULE_IP) {
        int af, bits;
        unsigned char a[16];
        if (parse_cidr(value, &af, a, &bits) != 0)
            rc = meshtls_err_set(err, MESHTLS_EINVAL,
                                 "rule ip '%s': expected an address or a CIDR such as "
                                 "10.0.0.0/8 or 2001:db8::/32",
                                 value);
    } else if (kind == MESHTLS_RULE_EMAIL && (!strchr(value, '@') || strchr(value, ' ')))
        rc = meshtls_err_set(err, MESHTLS_EINVAL, "rule email '%s': expected user@domain", value);
    if (rc)
        return rc;
    if (p->n >= MAX_RULES)
        return meshtls_err_set(err, MESHTLS_EINVAL, "more than %d policy rules", MAX_RULES);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        struct rule *r = realloc(p->rules, cap * sizeof(*r));
        if (!r)
            return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        p->rules = r;
        p->cap = cap;
    }
    struct rule *r = &p->rules[p->n];
    r->kind = kind;
    r->value = strdup(kind == MESHTLS_RULE_ALLOW_ALL ? "" : value);
    r->service = service ? strdup(service) : NULL;
    if (!r->value || (service && !r->service)) {
        free(r->value);
        free(r->service);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    p->n++;
    return 0;
}

int meshtls_policy_append(struct meshtls_policy *dst, const struct meshtls_policy *src,
                          struct meshtls_err *err)
{
    /* each rule was validated when it entered `src`; meshtls_policy_add checks it again,
     * which costs nothing that matters at load time and keeps one way in */
    for (size_t i = 0; src && i < src->n; i++) {
        const struct rule *r = &src->rules[i];
        int rc = meshtls_policy_add(dst, r->kind, r->value, r->service, err);
        if (rc)
            return rc;
    }
    return 0;
}

int meshtls_policy_names_service(const struct meshtls_policy *p, const char *service)
{
    for (size_t i = 0; p && service && i < p->n; i++)
        if (p->rules[i].service && !strcmp(p->rules[i].service, service))
            return 1;
    return 0;
}

static int in_list(char **v, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i], want))
            return 1;
    return 0;
}

static int rule_matches(const struct rule *r, const struct meshtls_identity *id)
{
    switch (r->kind) {
    case MESHTLS_RULE_ALLOW_ALL: return 1;
    case MESHTLS_RULE_CN: return !strcmp(id->cn, r->value);
    case MESHTLS_RULE_OU: return !strcmp(id->ou, r->value); /* first OU */
    case MESHTLS_RULE_DNS: return in_list(id->dns, id->n_dns, r->value);
    case MESHTLS_RULE_URI:
        for (size_t i = 0; i < id->n_uris; i++)
            if (strncmp(r->value, "spiffe://", 9) == 0 ? meshtls_spiffe_match(r->value, id->uris[i])
                                                       : !strcmp(r->value, id->uris[i]))
                return 1;
        return 0;
    case MESHTLS_RULE_IP:
        for (size_t i = 0; i < id->n_ips; i++)
            if (ip_in(r->value, id->ips[i]))
                return 1;
        return 0;
    case MESHTLS_RULE_EMAIL: return in_list(id->emails, id->n_emails, r->value);
    case MESHTLS_RULE_TRUST_DOMAIN:
        return id->spiffe_id && !strcmp(id->spiffe.trust_domain, r->value);
    }
    return 0;
}

void meshtls_policy_check(const struct meshtls_policy *p, const struct meshtls_identity *peer,
                          const char *service, struct meshtls_decision *out)
{
    memset(out, 0, sizeof(*out));
    if (!peer) {
        snprintf(out->reason, sizeof(out->reason), "no client certificate");
        return;
    }
    for (size_t i = 0; p && i < p->n; i++) {
        const struct rule *r = &p->rules[i];
        if (r->service && (!service || strcmp(r->service, service) != 0))
            continue;
        if (rule_matches(r, peer)) {
            out->allow = 1;
            snprintf(out->rule, sizeof(out->rule), "%s%s%.256s%s%.32s", kind_names[r->kind],
                     r->value[0] ? " " : "", r->value, r->service ? " -> " : "",
                     r->service ? r->service : "");
            snprintf(out->reason, sizeof(out->reason), "matched rule %zu", i + 1);
            return;
        }
    }
    snprintf(out->reason, sizeof(out->reason), "no rule allows %.200s (CN=%.64s)%s%.32s",
             peer->spiffe_id ? peer->spiffe_id : "a certificate without SPIFFE ID", peer->cn,
             service ? " to call " : "", service ? service : "");
}

int meshtls_policy_rule(const struct meshtls_policy *p, size_t i, enum meshtls_rule_kind *kind,
                        const char **value, const char **service)
{
    if (!p || i >= p->n)
        return MESHTLS_ENOENT;
    *kind = p->rules[i].kind;
    *value = p->rules[i].value;
    *service = p->rules[i].service;
    return 0;
}

const char *meshtls_rule_kind_name(enum meshtls_rule_kind kind)
{
    return kind >= MESHTLS_RULE_ALLOW_ALL && kind <= RULE_LAST ? kind_names[kind] : "?";
}
