/*
 * serve_body.h - the JSON request bodies of `meshtls ca serve` (/api/v1/sign,
 * /api/v1/renew, POST /api/peers, the admin revoke), parsed and checked without a server:
 * pure functions, so that fuzz/fuzz_ca_body.c drives exactly what the handlers run.
 *
 * Errors follow meshtls/err.h.
 */
#ifndef MESHTLS_CA_SERVE_BODY_H
#define MESHTLS_CA_SERVE_BODY_H

#include <stddef.h>

#include <jansson.h>

#include "meshtls/err.h"

#define CP_ADDRESS_MAX 255 /* POST /api/peers: "address", printable ASCII */

/** Which route's body. */
enum cp_body_kind {
    CP_BODY_SIGN = 1, /* {"token": "mtt_...", "csr": "-----BEGIN CERTIFICATE REQUEST-----..."} */
    CP_BODY_RENEW,    /* {"csr": "..."} */
    CP_BODY_PEER,     /* {"address": "host:port"} */
    CP_BODY_ADMIN,    /* revoke: {"reason": RFC 5280 name, "replace": bool}, both optional */
};

/** The fields of a body; strings borrowed from the parsed document. */
struct cp_body {
    const char *token;   /* sign */
    const char *csr;     /* sign, renew */
    const char *address; /* peer */
    const char *reason;  /* admin, NULL if absent */
    int replace;         /* admin: -1 if absent, else 0 or 1 */
};

/**
 * Parse `len` bytes at `buf` (borrowed) as the body of `kind`: one JSON object (duplicate
 * keys refused) whose fields have the route's types and forms.
 * @param doc on success the parsed document (json_decref it; *out borrows from it).
 * @return 0; MESHTLS_EPARSE if it is not a JSON object; MESHTLS_EINVAL if a field is
 *         missing or wrong.  `why` (cap bytes) then says what the body must be, as the
 *         400 answer's message.
 */
int cp_body_parse(enum cp_body_kind kind, const char *buf, size_t len, json_t **doc,
                  struct cp_body *out, char *why, size_t cap);

/** 1 if `a` is a peer address we keep (1 to CP_ADDRESS_MAX printable ASCII), else 0. */
int cp_address_valid(const char *a);

#endif
