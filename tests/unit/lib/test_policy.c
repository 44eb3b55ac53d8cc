/*
 * test_policy.c - identity policy as a table: rules, a peer identity, the
 * local service, and the expected decision.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "meshtls/policy.h"

static char *dns_api[] = {"api.internal", "api"};
static char *uri_orders[] = {"spiffe://acme.org/svc/orders"};
static char *uri_two[] = {"spiffe://acme.org/a", "spiffe://other.org/b"};
static char *uri_https[] = {"https://acme.org/id/web"};
static char *ips_web[] = {"10.1.2.3", "2001:db8::5"};
static char *emails_web[] = {"ops@acme.org"};

/* A peer as the identity parser would produce it. */
static struct meshtls_identity peer(const char *cn, const char *ou, char **dns, size_t n_dns,
                                    char **uris, size_t n_uris, const char *td)
{
    struct meshtls_identity id;
    memset(&id, 0, sizeof(id));
    id.cn = (char *)cn;
    id.ou = (char *)ou;
    id.dns = dns;
    id.n_dns = n_dns;
    id.uris = uris;
    id.n_uris = n_uris;
    if (td) {
        id.spiffe_id = uris[0];
        snprintf(id.spiffe.trust_domain, sizeof(id.spiffe.trust_domain), "%s", td);
    }
    return id;
}

struct rule_in {
    int kind;
    const char *value, *service;
};

struct pcase {
    const char *name;
    struct rule_in rules[3];
    int which_peer; /* 0 orders (SPIFFE), 1 api (DNS, OU), 2 two URIs, 3 web (IP, email, https) */
    const char *service;
    int allow;
    const char *rule_has;
};

static const struct pcase cases[] = {
    {"empty policy denies", {{0}}, 0, NULL, 0, ""},
    {"allow-all", {{MESHTLS_RULE_ALLOW_ALL, NULL, NULL}}, 0, NULL, 1, "allow-all"},
    {"cn match", {{MESHTLS_RULE_CN, "orders", NULL}}, 0, NULL, 1, "cn orders"},
    {"cn mismatch", {{MESHTLS_RULE_CN, "billing", NULL}}, 0, NULL, 0, ""},
    {"ou match", {{MESHTLS_RULE_OU, "payments", NULL}}, 1, NULL, 1, "ou payments"},
    {"dns match second SAN", {{MESHTLS_RULE_DNS, "api", NULL}}, 1, NULL, 1, "dns api"},
    {"dns is exact", {{MESHTLS_RULE_DNS, "api.internal.evil", NULL}}, 1, NULL, 0, ""},
    {"uri exact", {{MESHTLS_RULE_URI, "spiffe://acme.org/svc/orders", NULL}}, 0, NULL, 1, "uri"},
    {"uri wildcard", {{MESHTLS_RULE_URI, "spiffe://acme.org/svc/*", NULL}}, 0, NULL, 1, "svc/*"},
    {"uri wildcard one segment", {{MESHTLS_RULE_URI, "spiffe://acme.org/*", NULL}}, 0, NULL, 0, ""},
    {"uri double star", {{MESHTLS_RULE_URI, "spiffe://acme.org/**", NULL}}, 0, NULL, 1, "**"},
    {"trust domain", {{MESHTLS_RULE_TRUST_DOMAIN, "acme.org", NULL}}, 0, NULL, 1, "trust-domain"},
    {"trust domain other", {{MESHTLS_RULE_TRUST_DOMAIN, "other.org", NULL}}, 0, NULL, 0, ""},
    {"no spiffe id: trust domain never matches",
     {{MESHTLS_RULE_TRUST_DOMAIN, "acme.org", NULL}},
     2,
     NULL,
     0,
     ""},
    {"uri rule sees every URI SAN",
     {{MESHTLS_RULE_URI, "spiffe://other.org/b", NULL}},
     2,
     NULL,
     1,
     "other.org"},
    {"service-scoped rule applies to its service",
     {{MESHTLS_RULE_CN, "orders", "billing"}},
     0,
     "billing",
     1,
     "-> billing"},
    {"service-scoped rule ignored for another service",
     {{MESHTLS_RULE_CN, "orders", "billing"}},
     0,
     "inventory",
     0,
     ""},
    {"ip inside a CIDR", {{MESHTLS_RULE_IP, "10.0.0.0/8", NULL}}, 3, NULL, 1, "ip 10.0.0.0/8"},
    {"ip exact", {{MESHTLS_RULE_IP, "10.1.2.3", NULL}}, 3, NULL, 1, "ip"},
    {"ip outside", {{MESHTLS_RULE_IP, "10.1.2.0/31", NULL}}, 3, NULL, 0, ""},
    {"ip odd prefix", {{MESHTLS_RULE_IP, "10.1.2.0/30", NULL}}, 3, NULL, 1, "ip"},
    {"ipv6 CIDR", {{MESHTLS_RULE_IP, "2001:db8::/32", NULL}}, 3, NULL, 1, "ip"},
    {"ipv4 rule never matches ipv6", {{MESHTLS_RULE_IP, "0.0.0.0/0", NULL}}, 1, NULL, 0, ""},
    {"email exact", {{MESHTLS_RULE_EMAIL, "ops@acme.org", NULL}}, 3, NULL, 1, "email"},
    {"email other", {{MESHTLS_RULE_EMAIL, "dev@acme.org", NULL}}, 3, NULL, 0, ""},
    {"non-SPIFFE URI exact",
     {{MESHTLS_RULE_URI, "https://acme.org/id/web", NULL}},
     3,
     NULL,
     1,
     "uri https"},
    {"non-SPIFFE URI is exact", {{MESHTLS_RULE_URI, "https://acme.org/id", NULL}}, 3, NULL, 0, ""},
    {"second rule matches",
     {{MESHTLS_RULE_CN, "x", NULL}, {MESHTLS_RULE_URI, "spiffe://acme.org/svc/orders", NULL}},
     0,
     NULL,
     1,
     "uri"},
};

TEST(decisions)
{
    struct meshtls_identity peers[4] = {
        peer("orders", "", NULL, 0, uri_orders, 1, "acme.org"),
        peer("api", "payments", dns_api, 2, NULL, 0, NULL),
        peer("two", "", NULL, 0, uri_two, 2, NULL),
        peer("web", "", NULL, 0, uri_https, 1, NULL),
    };
    peers[3].ips = ips_web;
    peers[3].n_ips = 2;
    peers[3].emails = emails_web;
    peers[3].n_emails = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pcase *c = &cases[i];
        struct meshtls_policy *p = NULL;
        CHECK_INT_EQ(meshtls_policy_new(&p), 0);
        for (int r = 0; r < 3 && c->rules[r].kind; r++)
            CHECK_INT_EQ(meshtls_policy_add(p, c->rules[r].kind, c->rules[r].value,
                                            c->rules[r].service, NULL),
                         0);
        struct meshtls_decision d;
        meshtls_policy_check(p, &peers[c->which_peer], c->service, &d);
        if (d.allow != c->allow || !strstr(d.rule, c->rule_has))
            fprintf(stderr, "  case '%s': allow=%d rule='%s' reason='%s'\n", c->name, d.allow,
                    d.rule, d.reason);
        CHECK_INT_EQ(d.allow, c->allow);
        CHECK(strstr(d.rule, c->rule_has) != NULL);
        if (!d.allow)
            CHECK(strstr(d.reason, "no rule allows") != NULL);
        meshtls_policy_free(p);
    }
}

TEST(invalid_rules)
{
    struct meshtls_policy *p = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(meshtls_policy_new(&p), 0);
    /* wildcards are for SPIFFE IDs only; any other URI is exact */
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_URI, "http://x/*", NULL, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "rule uri 'http://x/*'") != NULL);
    CHECK(strstr(err.msg, "--") == NULL); /* a C program has no flags */
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_URI, "spiffe://td/a*", NULL, &err),
                 MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_URI, "spiffe://td/**/x", NULL, &err),
                 MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_TRUST_DOMAIN, "Acme.org", NULL, &err),
                 MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_CN, "", NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_URI, "no scheme", NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_IP, "10.0.0.0/33", NULL, &err), MESHTLS_EINVAL);
    CHECK(strstr(err.msg, "rule ip '10.0.0.0/33'") != NULL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_IP, "10.0.0.300", NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_IP, "::1/", NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_add(p, MESHTLS_RULE_EMAIL, "nobody", NULL, &err), MESHTLS_EINVAL);
    CHECK_INT_EQ(meshtls_policy_size(p), 0);
    struct meshtls_decision d;
    meshtls_policy_check(p, NULL, NULL, &d);
    CHECK(!d.allow && strstr(d.reason, "no client certificate"));
    CHECK_INT_EQ(meshtls_rule_kind_parse("trust-domain"), MESHTLS_RULE_TRUST_DOMAIN);
    CHECK_INT_EQ(meshtls_rule_kind_parse("bogus"), 0);
    meshtls_policy_free(p);
}

struct file_case {
    const char *yaml;
    int rc;
    const char *errhas;  /* substring of the message ("" = success) */
    const char *service; /* then check: does the peer reach this service? */
    int allow;
    int web; /* the peer: 0 orders (SPIFFE ID only), 1 web (IP and email SANs) */
};

static const struct file_case file_cases[] = {
    {"allow:\n  - uri: spiffe://acme.org/svc/orders\n", 0, "", "any", 1, 0},
    {"services:\n  billing:\n    allow:\n      - cn: orders\n", 0, "", "billing", 1, 0},
    {"services:\n  billing:\n    allow:\n      - cn: orders\n", 0, "", "inventory", 0, 0},
    {"allow:\n  - allow-all: true\n", 0, "", "x", 1, 0},
    {"allow:\n  - trust-domain: other.org\n", 0, "", "x", 0, 0},
    {"", MESHTLS_EPARSE, "p.yaml:1: expected a YAML document", NULL, 0, 0},
    {"allow: []\n", MESHTLS_EINVAL, "no rules", NULL, 0, 0},
    {"alow:\n  - cn: x\n", MESHTLS_EINVAL, "p.yaml:1: unknown key 'alow'", NULL, 0, 0},
    {"allow:\n  - cn: a\n  - color: red\n", MESHTLS_EINVAL, "p.yaml:3: unknown rule 'color'", NULL,
     0, 0},
    {"allow:\n  - uri: http://x/*\n", MESHTLS_EINVAL, "p.yaml:2: rule uri", NULL, 0, 0},
    {"allow:\n  - trust-domain: Bad.Org\n", MESHTLS_EINVAL, "p.yaml:2:", NULL, 0, 0},
    {"allow:\n  - allow-all: yes please\n", MESHTLS_EINVAL, "takes the value true", NULL, 0, 0},
    {"allow:\n  - cn: a\n    ou: b\n", MESHTLS_EPARSE, "one key per rule", NULL, 0, 0},
    {"allow: &a\n  - cn: a\nservices:\n  x:\n    allow: *a\n", MESHTLS_EPARSE, "aliases", NULL, 0,
     0},
    {"allow:\n  - cn: [unclosed\n", MESHTLS_EPARSE, "p.yaml:2: expected a value", NULL, 0, 0},
    {"allow:\n  - cn: \"unterminated\n", MESHTLS_EPARSE, "YAML syntax error", NULL, 0, 0},
    {"services:\n  billing:\n    deny:\n      - cn: x\n", MESHTLS_EINVAL,
     "p.yaml:3: unknown key under service 'billing'", NULL, 0, 0},
    {"allow:\n  - cn: a\n---\nallow:\n  - cn: b\n", MESHTLS_EPARSE, "single YAML document", NULL, 0,
     0},
    {"- cn: a\n", MESHTLS_EPARSE, "p.yaml:1: expected a mapping", NULL, 0, 0},
    /* ip (address or CIDR, IPv4 and IPv6) and email rules, as --allow-ip / --allow-email */
    {"allow:\n  - ip: 10.0.0.0/8\n", 0, "", "x", 1, 1},
    {"allow:\n  - ip: 10.1.2.3\n", 0, "", "x", 1, 1},
    {"allow:\n  - ip: 192.168.0.0/16\n", 0, "", "x", 0, 1},
    {"allow:\n  - ip: 10.0.0.0/8\n", 0, "", "x", 0, 0}, /* no IP SAN: no match */
    {"services:\n  billing:\n    allow:\n      - ip: 2001:db8::/32\n", 0, "", "billing", 1, 1},
    {"services:\n  billing:\n    allow:\n      - ip: 2001:db8::/32\n", 0, "", "other", 0, 1},
    {"allow:\n  - email: ops@acme.org\n", 0, "", "x", 1, 1},
    {"allow:\n  - email: dev@acme.org\n", 0, "", "x", 0, 1},
    {"allow:\n  - cn: a\n  - ip: 10.0.0.0/33\n", MESHTLS_EINVAL, "p.yaml:3: rule ip", NULL, 0, 0},
    {"allow:\n  - ip: 10.0.0.300\n", MESHTLS_EINVAL, "p.yaml:2:", NULL, 0, 0},
    {"allow:\n  - email: nobody\n", MESHTLS_EINVAL, "p.yaml:2:", NULL, 0, 0},
};

TEST(policy_files)
{
    struct meshtls_identity orders = peer("orders", "", NULL, 0, uri_orders, 1, "acme.org");
    struct meshtls_identity web = peer("web", "", NULL, 0, uri_https, 1, NULL);
    web.ips = ips_web;
    web.n_ips = 2;
    web.emails = emails_web;
    web.n_emails = 1;
    for (size_t i = 0; i < sizeof(file_cases) / sizeof(file_cases[0]); i++) {
        const struct file_case *c = &file_cases[i];
        struct meshtls_policy *p = NULL;
        struct meshtls_err err = MESHTLS_ERR_INIT;
        CHECK_INT_EQ(meshtls_policy_new(&p), 0);
        int rc = meshtls_policy_load_buffer(p, c->yaml, strlen(c->yaml), "p.yaml", &err);
        if (rc != c->rc || !strstr(err.msg, c->errhas))
            fprintf(stderr, "  file case %zu: rc=%d msg='%s'\n", i, rc, err.msg);
        CHECK_INT_EQ(rc, c->rc);
        CHECK(strstr(err.msg, c->errhas) != NULL);
        if (rc == 0 && c->service) {
            struct meshtls_decision d;
            meshtls_policy_check(p, c->web ? &web : &orders, c->service, &d);
            if (d.allow != c->allow)
                fprintf(stderr, "  file case %zu: allow=%d reason='%s'\n", i, d.allow, d.reason);
            CHECK_INT_EQ(d.allow, c->allow);
        }
        meshtls_policy_free(p);
    }
}

/* A reload's policy: the file's rules, then the flags'; and which services a file names. */
static const struct {
    const char *yaml, *service; /* file, local service asked about */
    int names;                  /* meshtls_policy_names_service */
    int allow;                  /* orders, after appending a flag rule "cn orders" only for
                                 * service "flags" */
} append_cases[] = {
    {"services:\n  billing:\n    allow:\n      - cn: x\n", "billing", 1, 0},
    {"services:\n  billing:\n    allow:\n      - cn: x\n", "billin", 0, 0},
    {"allow:\n  - cn: x\n", "billing", 0, 0},
    {"allow:\n  - cn: x\n", "flags", 0, 1},
    {"services:\n  flags:\n    allow:\n      - cn: y\n", "flags", 1, 1},
};

TEST(append_and_names_service)
{
    struct meshtls_identity orders = peer("orders", "", NULL, 0, uri_orders, 1, "acme.org");
    for (size_t i = 0; i < sizeof(append_cases) / sizeof(append_cases[0]); i++) {
        struct meshtls_policy *file = NULL, *flags = NULL;
        struct meshtls_err err = MESHTLS_ERR_INIT;
        CHECK_INT_EQ(meshtls_policy_new(&file), 0);
        CHECK_INT_EQ(meshtls_policy_new(&flags), 0);
        const char *y = append_cases[i].yaml;
        CHECK_INT_EQ(meshtls_policy_load_buffer(file, y, strlen(y), "p.yaml", &err), 0);
        CHECK_INT_EQ(meshtls_policy_add(flags, MESHTLS_RULE_CN, "orders", "flags", &err), 0);
        CHECK_INT_EQ(meshtls_policy_names_service(file, append_cases[i].service),
                     append_cases[i].names);
        size_t before = meshtls_policy_size(file);
        CHECK_INT_EQ(meshtls_policy_append(file, flags, &err), 0);
        CHECK_INT_EQ((int)meshtls_policy_size(file), (int)before + 1);
        struct meshtls_decision d;
        meshtls_policy_check(file, &orders, append_cases[i].service, &d);
        CHECK_INT_EQ(d.allow, append_cases[i].allow);
        meshtls_policy_free(file);
        meshtls_policy_free(flags);
    }
    CHECK_INT_EQ(meshtls_policy_names_service(NULL, "x"), 0);
    CHECK_INT_EQ(meshtls_policy_append(NULL, NULL, NULL) == 0, 1); /* nothing to copy */
}

int main(void)
{
    RUN(append_and_names_service);
    RUN(policy_files);
    RUN(decisions);
    RUN(invalid_rules);
    return check_summary();
}
