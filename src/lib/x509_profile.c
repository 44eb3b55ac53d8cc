/*
 * x509_profile.c - RFC 5280's certificate and CRL profile, where OpenSSL is lenient.
 *
 * OpenSSL's verifier (without X509_V_FLAG_X509_STRICT, and even with it for several
 * rules) accepts chains that break MUST-level rules of the profile: a negative or 21-octet
 * serial, a CA certificate without a subjectKeyIdentifier or with a non-critical
 * basicConstraints, a leaf that asserts keyCertSign, an empty subject without a critical
 * subjectAltName, and more.  Such certificates do not come from a CA that follows the
 * profile: a CA that gets these wrong gets other things wrong, and a parser elsewhere in
 * the mesh (Go's crypto/x509, rustls' webpki) may read them differently from us.
 *
 * Each rule is one row of a table: an id that logs and metrics carry, its RFC 5280
 * section, and a check function that gets one decoded certificate and its place in the
 * chain and, when the rule is broken, writes what is wrong and what to do.  The checks run
 * after OpenSSL has verified the chain (signatures, validity, revocation, purpose), so they
 * see only chains that are otherwise good, and they only read what OpenSSL has already
 * decoded (its extension cache) or decode one extension: cheap next to a signature check,
 * and done once per chain when the verified-chain cache is on.
 *
 * Rules OpenSSL 3.0 already enforces are left out (a critical authority or subject key
 * identifier is an unhandled critical extension to it; an issuer without cA=TRUE or
 * without keyCertSign is an invalid CA; name-constraint minimum/maximum fields are
 * refused); docs/PKI.md lists both sets.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include "meshtls/x509.h"

/* One certificate under check and where it sits. */
struct pcert {
    X509 *x;
    int depth;     /* 0: the leaf */
    int is_issuer; /* it signed the certificate below it in the chain (a CA by use) */
};

/* A rule: `check` returns 1 and writes the problem and the fix into `buf` when broken. */
struct rule {
    const char *id;
    const char *section;
    int (*check)(const struct pcert *c, char *buf, size_t cap);
};

/* ---- helpers --------------------------------------------------------------------- */

/* Index of the first extension `nid` of `x`, -1 when absent. */
static int ext_index(X509 *x, int nid)
{
    return X509_get_ext_by_NID(x, nid, -1);
}

static int ext_critical(X509 *x, int nid)
{
    int i = ext_index(x, nid);
    return i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i)) == 1;
}

/* Does `a` fit RFC 5280's INTEGER serials and CRL numbers (non-negative, at most 20 DER
 * content octets)?  @return 0 if so, 2 if negative, 3 if too long; *zero set if it is 0. */
static int integer_profile(const ASN1_INTEGER *a, int *zero)
{
    int len = a ? ASN1_STRING_length(a) : 0;
    const unsigned char *d = a ? ASN1_STRING_get0_data(a) : NULL;
    int nz = 0;
    for (int i = 0; i < len; i++)
        nz |= d[i];
    *zero = !nz;
    if (!a || ASN1_STRING_type(a) == V_ASN1_NEG_INTEGER)
        return nz ? 2 : 0;
    /* OpenSSL keeps the magnitude; DER adds a 0x00 octet when its top bit is set */
    int octets = len + (len > 0 && (d[0] & 0x80) ? 1 : 0);
    return octets > 20 ? 3 : 0;
}

/* RFC 5280 4.1.2.5: through 2049 UTCTime, from 2050 GeneralizedTime.  1 if `t` breaks it. */
static int time_misencoded(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_STRING_type(t) != V_ASN1_GENERALIZEDTIME)
        return 0; /* UTCTime can only say 1950..2049 */
    return ASN1_TIME_to_tm(t, &tm) == 1 && tm.tm_year + 1900 < 2050;
}

/* Most extensions compared pairwise: a real certificate carries about ten.  A peer could
 * send thousands (a Certificate message is allowed ~100 KB), so past this the check refuses
 * rather than spend quadratic time or pass what it did not look at. */
#define MAX_EXTS 256

/* The first OID that appears twice among `exts`, or NULL; *too_many set past MAX_EXTS. */
static const ASN1_OBJECT *repeated_oid(const STACK_OF(X509_EXTENSION) * exts, int *too_many)
{
    int n = sk_X509_EXTENSION_num(exts);
    *too_many = n > MAX_EXTS;
    for (int i = 0; i < n && !*too_many; i++) {
        const ASN1_OBJECT *o = X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i));
        for (int j = i + 1; j < n; j++)
            if (OBJ_cmp(o, X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, j))) == 0)
                return o;
    }
    return NULL;
}

static int is_ca_flagged(X509 *x)
{
    return (X509_get_extension_flags(x) & EXFLAG_CA) != 0;
}

/* ---- certificate rules ------------------------------------------------------------ */

static int r_serial_positive(const struct pcert *c, char *buf, size_t cap)
{
    int zero;
    int r = integer_profile(X509_get0_serialNumber(c->x), &zero);
    if (r != 2 && !zero)
        return 0;
    snprintf(buf, cap,
             "its serial number is %s; the profile wants a positive integer: reissue it from "
             "a CA that draws positive serials",
             zero ? "zero" : "negative");
    return 1;
}

static int r_serial_length(const struct pcert *c, char *buf, size_t cap)
{
    int zero;
    if (integer_profile(X509_get0_serialNumber(c->x), &zero) != 3)
        return 0;
    snprintf(buf, cap,
             "its serial number takes more than 20 octets; reissue it from a CA that draws "
             "serials of at most 159 bits");
    return 1;
}

static int r_sig_alg(const struct pcert *c, char *buf, size_t cap)
{
    const X509_ALGOR *outer = NULL;
    X509_get0_signature(NULL, &outer, c->x);
    if (!outer || X509_ALGOR_cmp(outer, X509_get0_tbs_sigalg(c->x)) == 0)
        return 0;
    snprintf(buf, cap,
             "the signature algorithm inside the signed part differs from the one outside; "
             "the certificate was altered or its CA is broken: reissue it");
    return 1;
}

static int r_version(const struct pcert *c, char *buf, size_t cap)
{
    if (X509_get_ext_count(c->x) == 0 || X509_get_version(c->x) == X509_VERSION_3)
        return 0;
    snprintf(buf, cap, "it carries extensions but says version %ld; extensions need v3: reissue it",
             X509_get_version(c->x) + 1);
    return 1;
}

static int r_issuer_empty(const struct pcert *c, char *buf, size_t cap)
{
    if (X509_NAME_entry_count(X509_get_issuer_name(c->x)) > 0)
        return 0;
    snprintf(buf, cap,
             "its issuer name is empty; its CA must have a non-empty subject: "
             "reissue the CA and this certificate");
    return 1;
}

static int r_time_encoding(const struct pcert *c, char *buf, size_t cap)
{
    if (!time_misencoded(X509_get0_notBefore(c->x)) && !time_misencoded(X509_get0_notAfter(c->x)))
        return 0;
    snprintf(buf, cap,
             "a validity date before 2050 is encoded as GeneralizedTime (the profile "
             "wants UTCTime through 2049): reissue it");
    return 1;
}

static int r_ext_repeated(const struct pcert *c, char *buf, size_t cap)
{
    int too_many;
    const ASN1_OBJECT *o = repeated_oid(X509_get0_extensions(c->x), &too_many);
    char oid[80];
    if (too_many)
        snprintf(buf, cap, "it carries more than %d extensions, too many to check: reissue it",
                 MAX_EXTS);
    else if (o && OBJ_obj2txt(oid, sizeof(oid), o, 0) >= 0)
        snprintf(buf, cap, "it carries the extension %s more than once: reissue it with one", oid);
    return too_many || o;
}

static int r_ca_subject(const struct pcert *c, char *buf, size_t cap)
{
    if (!c->is_issuer || X509_NAME_entry_count(X509_get_subject_name(c->x)) > 0)
        return 0;
    snprintf(buf, cap,
             "it is a CA with an empty subject; a CA needs a distinguished name: "
             "reissue it with one");
    return 1;
}

static int r_ca_bc_critical(const struct pcert *c, char *buf, size_t cap)
{
    if (!c->is_issuer || ext_critical(c->x, NID_basic_constraints))
        return 0;
    snprintf(buf, cap,
             "it is a CA whose basicConstraints extension is %s; a CA's must be present and "
             "critical: reissue it (e.g. 'basicConstraints = critical, CA:TRUE')",
             ext_index(c->x, NID_basic_constraints) < 0 ? "absent" : "not critical");
    return 1;
}

static int r_ca_ski(const struct pcert *c, char *buf, size_t cap)
{
    if (!c->is_issuer || ext_index(c->x, NID_subject_key_identifier) >= 0)
        return 0;
    snprintf(buf, cap,
             "it is a CA without a subjectKeyIdentifier: reissue it with one (e.g. "
             "'subjectKeyIdentifier = hash')");
    return 1;
}

static int r_ca_key_usage(const struct pcert *c, char *buf, size_t cap)
{
    if (!c->is_issuer || (X509_get_extension_flags(c->x) & EXFLAG_KUSAGE))
        return 0;
    snprintf(buf, cap,
             "it is a CA without a keyUsage extension: reissue it with one that "
             "asserts keyCertSign (e.g. 'keyUsage = critical, keyCertSign, cRLSign')");
    return 1;
}

static int r_aki(const struct pcert *c, char *buf, size_t cap)
{
    if (X509_get_extension_flags(c->x) & EXFLAG_SS)
        return 0; /* a self-signed certificate may leave it out */
    if (X509_get0_authority_key_id(c->x))
        return 0;
    snprintf(buf, cap,
             "it has no authorityKeyIdentifier with a key identifier; every certificate but a "
             "self-signed one needs one: reissue it (e.g. 'authorityKeyIdentifier = keyid')");
    return 1;
}

static int r_malformed(const struct pcert *c, char *buf, size_t cap)
{
    /* OpenSSL's verifier refuses these itself (X509_V_ERR_INVALID_EXTENSION); checked here
     * first because its accessors then answer as if the extensions were absent */
    if (!(X509_get_extension_flags(c->x) & EXFLAG_INVALID))
        return 0;
    snprintf(buf, cap,
             "an extension cannot be decoded or breaks its own syntax (e.g. a "
             "keyUsage with no bit set, a negative path length): reissue it");
    return 1;
}

static int r_keycertsign_non_ca(const struct pcert *c, char *buf, size_t cap)
{
    if (!(X509_get_extension_flags(c->x) & EXFLAG_KUSAGE) ||
        !(X509_get_key_usage(c->x) & KU_KEY_CERT_SIGN) || is_ca_flagged(c->x))
        return 0;
    snprintf(buf, cap,
             "its keyUsage asserts keyCertSign, a CA's usage, but basicConstraints "
             "does not say cA=TRUE: reissue it without keyCertSign (a leaf needs "
             "digitalSignature)");
    return 1;
}

static int r_pathlen(const struct pcert *c, char *buf, size_t cap)
{
    /* OpenSSL's cache keeps the path length (-1: none) and marks a non-CA's non-zero one
     * invalid, but lets a non-CA's pathLenConstraint of 0 through */
    if (X509_get_pathlen(c->x) < 0 ||
        (is_ca_flagged(c->x) && (X509_get_extension_flags(c->x) & EXFLAG_KUSAGE) &&
         (X509_get_key_usage(c->x) & KU_KEY_CERT_SIGN)))
        return 0;
    snprintf(buf, cap,
             "its basicConstraints has a pathLenConstraint without cA=TRUE and "
             "keyCertSign: reissue it without the path length");
    return 1;
}

static int r_nc(const struct pcert *c, char *buf, size_t cap)
{
    int i = ext_index(c->x, NID_name_constraints);
    if (i < 0)
        return 0;
    const char *what = NULL;
    int crit;
    NAME_CONSTRAINTS *nc = X509_get_ext_d2i(c->x, NID_name_constraints, &crit, NULL);
    if (!is_ca_flagged(c->x))
        what = "it carries nameConstraints but is not a CA";
    else if (crit != 1)
        what = "its nameConstraints extension is not critical";
    else if (!nc || (sk_GENERAL_SUBTREE_num(nc->permittedSubtrees) <= 0 &&
                     sk_GENERAL_SUBTREE_num(nc->excludedSubtrees) <= 0))
        what = "its nameConstraints extension names no permitted or excluded subtree";
    NAME_CONSTRAINTS_free(nc);
    if (!what)
        return 0;
    snprintf(buf, cap,
             "%s; name constraints belong in CA certificates only, critical, with "
             "at least one subtree: reissue it",
             what);
    return 1;
}

/* URI with a scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":") and more. */
static int uri_absolute(const unsigned char *s, int len)
{
    int i = 0;
    if (len < 1 || !((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z'))
        return 0;
    while (i < len && s[i] != ':') {
        unsigned char ch = s[i];
        if (!((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') && !(ch >= '0' && ch <= '9') && ch != '+' &&
            ch != '-' && ch != '.')
            return 0;
        i++;
    }
    return i < len - 1; /* a ':' and a scheme-specific part after it */
}

/* RFC 1034 preferred name syntax (letters, digits, hyphens; non-empty labels), with the
 * leading "*." label certificates use for wildcards.  The one " " name is refused too. */
static int dns_preferred(const unsigned char *s, int len)
{
    int i = 0, label = 0;
    if (len >= 2 && s[0] == '*' && s[1] == '.')
        i = 2;
    if (i >= len)
        return 0;
    for (; i < len; i++) {
        unsigned char ch = s[i];
        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') || (ch >= '0' && ch <= '9') ||
                   ch == '-') {
            label++;
        } else {
            return 0;
        }
    }
    return label > 0 || (len > 1 && s[len - 1] == '.' && s[len - 2] != '.');
}

/* The first malformed entry of `gens`, described into buf; 0 if all are well formed. */
static int bad_general_name(GENERAL_NAMES *gens, char *buf, size_t cap)
{
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int type;
        ASN1_STRING *s = GENERAL_NAME_get0_value(g, &type);
        int len = s ? ASN1_STRING_length(s) : 0;
        const unsigned char *d = s ? ASN1_STRING_get0_data(s) : NULL;
        switch (type) {
        case GEN_DNS:
            if (!dns_preferred(d, len)) {
                snprintf(buf, cap, "DNS name '%.*s' is empty or not in the preferred name syntax",
                         len > 100 ? 100 : len, d ? (const char *)d : "");
                return 1;
            }
            break;
        case GEN_URI:
            if (!uri_absolute(d, len)) {
                snprintf(buf, cap, "URI '%.*s' is empty or has no scheme", len > 100 ? 100 : len,
                         d ? (const char *)d : "");
                return 1;
            }
            break;
        case GEN_EMAIL:
            if (len == 0 || !memchr(d, '@', (size_t)len)) {
                snprintf(buf, cap, "email '%.*s' is empty or has no '@'", len > 100 ? 100 : len,
                         d ? (const char *)d : "");
                return 1;
            }
            break;
        case GEN_IPADD:
            if (len != 4 && len != 16) {
                snprintf(buf, cap, "IP address entry is %d octets, not 4 or 16", len);
                return 1;
            }
            break;
        default: break;
        }
    }
    return 0;
}

static int r_san(const struct pcert *c, char *buf, size_t cap)
{
    int crit;
    char bad[160] = "";
    const char *what = NULL;
    int empty_subject = X509_NAME_entry_count(X509_get_subject_name(c->x)) == 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(c->x, NID_subject_alt_name, &crit, NULL);
    if (ext_index(c->x, NID_subject_alt_name) < 0)
        what = empty_subject ? "its subject is empty and it has no subjectAltName: reissue it "
                               "with a name in a critical subjectAltName"
                             : NULL;
    else if (!gens)
        what = "its subjectAltName cannot be decoded: reissue it";
    else if (sk_GENERAL_NAME_num(gens) == 0)
        what = "its subjectAltName holds no name: reissue it with one, or without the extension";
    else if (empty_subject && crit != 1)
        what = "its subject is empty and its subjectAltName is not critical: reissue it with the "
               "subjectAltName marked critical";
    else if (bad_general_name(gens, bad, sizeof(bad)))
        what = bad;
    GENERAL_NAMES_free(gens);
    if (!what)
        return 0;
    if (what == bad)
        snprintf(buf, cap, "in its subjectAltName the %s: reissue it with well-formed names", bad);
    else
        snprintf(buf, cap, "%s", what);
    return 1;
}

/* The rules in the order they are checked (first broken one reported). */
static const struct rule CERT_RULES[] = {
    {"rfc5280-serial-positive", "4.1.2.2", r_serial_positive},
    {"rfc5280-serial-length", "4.1.2.2", r_serial_length},
    {"rfc5280-signature-algorithm", "4.1.1.2", r_sig_alg},
    {"rfc5280-version", "4.1.2.1", r_version},
    {"rfc5280-issuer-empty", "4.1.2.4", r_issuer_empty},
    {"rfc5280-time-encoding", "4.1.2.5", r_time_encoding},
    {"rfc5280-extension-repeated", "4.2", r_ext_repeated},
    {"rfc5280-extension-malformed", "4.2", r_malformed},
    {"rfc5280-ca-subject", "4.1.2.6", r_ca_subject},
    {"rfc5280-ca-basic-constraints", "4.2.1.9", r_ca_bc_critical},
    {"rfc5280-ca-key-id", "4.2.1.2", r_ca_ski},
    {"rfc5280-ca-key-usage", "4.2.1.3", r_ca_key_usage},
    {"rfc5280-authority-key-id", "4.2.1.1", r_aki},
    {"rfc5280-key-cert-sign-non-ca", "4.2.1.3", r_keycertsign_non_ca},
    {"rfc5280-path-length", "4.2.1.9", r_pathlen},
    {"rfc5280-name-constraints", "4.2.1.10", r_nc},
    {"rfc5280-subject-alt-name", "4.2.1.6", r_san},
};

/* "subject S, serial N" of `x` into buf (RFC 2253 subject, lower-case hex serial). */
static void cert_label(X509 *x, char *buf, size_t cap)
{
    char subj[200] = "";
    BIO *b = BIO_new(BIO_s_mem());
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, subj, (int)sizeof(subj) - 1);
        subj[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    char hex[100] = "?";
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    if (h) {
        for (char *p = h; *p; p++)
            *p = (char)((*p >= 'A' && *p <= 'F') ? *p - 'A' + 'a' : *p);
        snprintf(hex, sizeof(hex), "%.90s", h);
    }
    OPENSSL_free(h);
    BN_free(bn);
    snprintf(buf, cap, "subject \"%s\", serial %s", subj[0] ? subj : "(empty)", hex);
}

/* Append `s` to the NUL-terminated `dst` of `cap` bytes, truncating (a long subject must
 * not push the rule id out of the message, so the rule goes first in violation()). */
static void append(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(dst), k = strlen(s);
    if (n + 1 >= cap)
        return;
    if (k > cap - 1 - n)
        k = cap - 1 - n;
    memcpy(dst + n, s, k);
    dst[n + k] = '\0';
}

static int violation(struct meshtls_x509_violation *v, const char *rule, const char *section,
                     int depth, const char *who, const char *what)
{
    if (v) {
        v->rule = rule;
        v->section = section;
        v->depth = depth;
        v->msg[0] = '\0';
        append(v->msg, sizeof(v->msg), who);
        append(v->msg, sizeof(v->msg), " breaks RFC 5280 ");
        append(v->msg, sizeof(v->msg), section);
        append(v->msg, sizeof(v->msg), " (");
        append(v->msg, sizeof(v->msg), rule);
        append(v->msg, sizeof(v->msg), "): ");
        append(v->msg, sizeof(v->msg), what);
    }
    return MESHTLS_EUNTRUSTED;
}

int meshtls_x509_profile_check(STACK_OF(X509) * chain, int anchors,
                               struct meshtls_x509_violation *v)
{
    int n = sk_X509_num(chain) - (anchors > 0 ? anchors : 0);
    for (int depth = 0; depth < n; depth++) {
        struct pcert c = {.x = sk_X509_value(chain, depth), .depth = depth, .is_issuer = depth > 0};
        char what[MESHTLS_ERR_MSG_MAX / 2];
        for (size_t i = 0; i < sizeof(CERT_RULES) / sizeof(CERT_RULES[0]); i++) {
            if (!CERT_RULES[i].check(&c, what, sizeof(what)))
                continue;
            char who[320] = "", label[300];
            cert_label(c.x, label, sizeof(label));
            append(who, sizeof(who),
                   depth == 0 ? "the leaf certificate (" : "the CA certificate (");
            append(who, sizeof(who), label);
            append(who, sizeof(who), ")");
            return violation(v, CERT_RULES[i].id, CERT_RULES[i].section, depth, who, what);
        }
    }
    return 0;
}

/* ---- CRL rules -------------------------------------------------------------------- */

int meshtls_x509_profile_check_crl(X509_CRL *crl, const char *what,
                                   struct meshtls_x509_violation *v)
{
    const char *rule = NULL, *section = NULL, *problem = NULL;
    char buf[200];
    int crit = 0, zero = 0;
    const STACK_OF(X509_EXTENSION) *exts = X509_CRL_get0_extensions(crl);
    int too_many;
    const ASN1_OBJECT *dup = repeated_oid(exts, &too_many);
    int entry_exts = 0;
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    for (int i = 0; i < sk_X509_REVOKED_num(revoked) && !entry_exts; i++)
        entry_exts = X509_REVOKED_get_ext_count(sk_X509_REVOKED_value(revoked, i)) > 0;
    AUTHORITY_KEYID *akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, &crit, NULL);
    int has_keyid = akid && akid->keyid;
    AUTHORITY_KEYID_free(akid);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, &crit, NULL);
    int num_bad = num ? integer_profile(num, &zero) : 0;
    int num_critical = crit == 1;
    ASN1_INTEGER_free(num);

    if ((sk_X509_EXTENSION_num(exts) > 0 || entry_exts) && X509_CRL_get_version(crl) != 1) {
        rule = "rfc5280-crl-version", section = "5.1.2.1";
        problem = "it carries extensions but is not a v2 CRL";
    } else if (X509_NAME_entry_count(X509_CRL_get_issuer(crl)) == 0) {
        rule = "rfc5280-crl-issuer", section = "5.1.2.3";
        problem = "its issuer name is empty";
    } else if (!X509_CRL_get0_nextUpdate(crl)) {
        rule = "rfc5280-crl-next-update", section = "5.1.2.5";
        problem = "it has no nextUpdate, so no one can tell when it is stale";
    } else if (time_misencoded(X509_CRL_get0_lastUpdate(crl)) ||
               time_misencoded(X509_CRL_get0_nextUpdate(crl))) {
        rule = "rfc5280-crl-time-encoding", section = "5.1.2.4";
        problem = "a date before 2050 is encoded as GeneralizedTime, not UTCTime";
    } else if (too_many) {
        rule = "rfc5280-crl-extension-repeated", section = "5.2";
        problem = "it carries too many extensions to check";
    } else if (dup) {
        char oid[80];
        OBJ_obj2txt(oid, sizeof(oid), dup, 0);
        snprintf(buf, sizeof(buf), "it carries the extension %s more than once", oid);
        rule = "rfc5280-crl-extension-repeated", section = "5.2", problem = buf;
    } else if (!has_keyid) {
        rule = "rfc5280-crl-authority-key-id", section = "5.2.1";
        problem = "it has no authorityKeyIdentifier with a key identifier";
    } else if (X509_CRL_get_ext_by_NID(crl, NID_crl_number, -1) < 0 || num_critical || num_bad ||
               !num) {
        rule = "rfc5280-crl-number", section = "5.2.3";
        problem = num_critical ? "its cRLNumber extension is critical"
                  : num_bad    ? "its cRLNumber is negative or longer than 20 octets"
                               : "it has no cRLNumber extension";
    }
    if (!rule)
        return 0;
    char fix[300] = "";
    append(fix, sizeof(fix), problem);
    append(fix, sizeof(fix), ": publish a conforming CRL (as 'meshtls ca crl' writes)");
    return violation(v, rule, section, -1, what ? what : "the CRL", fix);
}
