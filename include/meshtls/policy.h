/*
 * meshtls/policy.h - who may call: identity allow-lists.
 *
 * A policy is built once (from flags or a policy file), then only read:
 * meshtls_policy_check() is a pure function of (policy, peer identity,
 * local service) -> allow/deny + the rule that decided + a reason, so it can
 * be unit-tested, fuzzed and logged as an audit event.  A policy may be
 * shared by any number of threads once built.
 *
 * Rules (ghostunnel-compatible, any match allows):
 *   allow-all              any verified certificate
 *   cn NAME                subject CN equals NAME
 *   ou NAME                one subject OU equals NAME
 *   dns NAME               one DNS SAN equals NAME
 *   uri PATTERN            the SPIFFE ID / URI SAN matches PATTERN ("*" = one path
 *                          segment, a final "**" = one or more)
 *   trust-domain TD        the SPIFFE ID is in trust domain TD
 * A rule may be restricted to one local service (policy files), so that
 * "orders may call billing" does not let orders call everything.
 */
#ifndef MESHTLS_POLICY_H
#define MESHTLS_POLICY_H

#include <stddef.h>

#include "meshtls/err.h"
#include "meshtls/export.h"
#include "meshtls/identity.h"

#ifdef __cplusplus
extern "C" {
#endif

enum meshtls_rule_kind {
    MESHTLS_RULE_ALLOW_ALL = 1,
    MESHTLS_RULE_CN,
    MESHTLS_RULE_OU,
    MESHTLS_RULE_DNS,
    MESHTLS_RULE_URI,
    MESHTLS_RULE_TRUST_DOMAIN,
    MESHTLS_RULE_IP,    /**< an IP SAN inside an address or CIDR ("10.0.0.0/8", "::1") */
    MESHTLS_RULE_EMAIL, /**< an email SAN, exactly */
};

struct meshtls_policy;

/** A decision.  Plain value; `rule` and `reason` are NUL-terminated. */
struct meshtls_decision {
    int allow;        /**< 1 allow, 0 deny */
    char rule[400];   /**< the rule that allowed (e.g. "cn orders"), or "" */
    char reason[400]; /**< why, in words */
};

/** New empty policy (denies everything). @param out caller frees with meshtls_policy_free(). */
MESHTLS_API int meshtls_policy_new(struct meshtls_policy **out);
/** Free `p`; NULL is fine. */
MESHTLS_API void meshtls_policy_free(struct meshtls_policy *p);

/**
 * Add a rule.  `value` (copied) is validated: URIs must be SPIFFE IDs or
 * patterns of them, trust domains must be valid.  `service` (copied, may be
 * NULL = any local service) restricts the rule to one local service.
 * @return 0 or MESHTLS_EINVAL naming the value.
 */
MESHTLS_API int meshtls_policy_add(struct meshtls_policy *p, enum meshtls_rule_kind kind,
                                   const char *value, const char *service, struct meshtls_err *err);

/**
 * Rule values: `uri` is a SPIFFE ID or a pattern of one ("*" a whole segment, a final "**"),
 * or any other absolute URI matched exactly against every URI SAN; `ip` an address or a
 * CIDR; `email` an address matched exactly (case-sensitively) against the email SANs.
 */
/** Parse "allow-all|cn|ou|dns|uri|trust-domain|ip|email"; @return kind or 0. */
MESHTLS_API int meshtls_rule_kind_parse(const char *s);

/**
 * Append a copy of every rule of `src` (borrowed) to `dst`, in order: how a command
 * combines a re-read policy file with the rules its flags gave.
 * @return 0, or MESHTLS_ENOMEM / MESHTLS_EINVAL (too many rules); on error `dst` may
 *         hold some of the rules: discard it.
 */
MESHTLS_API int meshtls_policy_append(struct meshtls_policy *dst, const struct meshtls_policy *src,
                                      struct meshtls_err *err);

/** Whether `p` has at least one rule scoped to the local `service`. Pure. */
MESHTLS_API int meshtls_policy_names_service(const struct meshtls_policy *p, const char *service);

/** Number of rules in `p`. */
MESHTLS_API size_t meshtls_policy_size(const struct meshtls_policy *p);

/**
 * Rule `i` (0-based) of `p`, for logs and tools: its kind, value ("" for allow-all) and
 * local service (NULL = any); the strings are borrowed from `p`.
 * @return 0, or MESHTLS_ENOENT if there is no rule `i`.
 */
MESHTLS_API int meshtls_policy_rule(const struct meshtls_policy *p, size_t i,
                                    enum meshtls_rule_kind *kind, const char **value,
                                    const char **service);

/** "allow-all", "cn", "ou", "dns", "uri", "trust-domain", "ip", "email" (static), or "?". */
MESHTLS_API const char *meshtls_rule_kind_name(enum meshtls_rule_kind kind);

/**
 * Decide whether `peer` (borrowed) may call the local `service` (may be NULL).
 * Pure: no I/O, no allocation, no global state.
 */
MESHTLS_API void meshtls_policy_check(const struct meshtls_policy *p,
                                      const struct meshtls_identity *peer, const char *service,
                                      struct meshtls_decision *out);

/**
 * Add the rules of a policy file (YAML) to `p`:
 *
 *     allow:                      # rules for any local service
 *       - trust-domain: example.org
 *     services:                   # rules for one local service each
 *       billing:
 *         allow:
 *           - uri: spiffe://example.org/svc/orders
 *           - cn: legacy-batch
 *       inventory:
 *         allow:
 *           - allow-all: true
 *
 * Every rule is validated at load; an error names `path`, the line and the
 * field.  Unknown keys, aliases, tags and several documents are refused.
 * `path` names the source in messages; the _buffer variant parses `len`
 * bytes of `buf`.
 * @return 0 or MESHTLS_EINVAL / MESHTLS_EPARSE / an I/O error; on error `p`
 *         may hold some of the rules: discard it.
 */
MESHTLS_API int meshtls_policy_load_file(struct meshtls_policy *p, const char *path,
                                         struct meshtls_err *err);
MESHTLS_API int meshtls_policy_load_buffer(struct meshtls_policy *p, const char *buf, size_t len,
                                           const char *path, struct meshtls_err *err);

#ifdef __cplusplus
}
#endif
#endif
