/*
 * serve_body.c - the control plane's JSON request bodies (see serve_body.h).  The
 * messages are the 400 answers the handlers send, so a client sees what to send instead.
 */
#include <stdio.h>
#include <string.h>

#include "ca.h"
#include "serve_body.h"

int cp_address_valid(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    if (n == 0 || n > CP_ADDRESS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] <= 0x20 || (unsigned char)a[i] >= 0x7f)
            return 0;
    return 1;
}

/* The JSON object of the body, or MESHTLS_EPARSE with the message of the 400. */
static int load_object(const char *buf, size_t len, json_t **doc, char *why, size_t cap)
{
    json_error_t je;
    json_t *j = NULL;
    *doc = NULL;
    if (len == 0) {
        snprintf(why, cap,
                 "the body must be a JSON object: the request body is empty: send a JSON "
                 "document");
        return MESHTLS_EPARSE;
    }
    if (!(j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je))) {
        snprintf(why, cap,
                 "the body must be a JSON object: the request body is not valid JSON: %s (line "
                 "%d, column %d)",
                 je.text, je.line, je.column);
        return MESHTLS_EPARSE;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(why, cap, "the body must be a JSON object");
        return MESHTLS_EPARSE;
    }
    *doc = j;
    return 0;
}

int cp_body_parse(enum cp_body_kind kind, const char *buf, size_t len, json_t **doc,
                  struct cp_body *out, char *why, size_t cap)
{
    memset(out, 0, sizeof(*out));
    out->replace = -1;
    int rc = load_object(buf, len, doc, why, cap);
    if (rc)
        return rc;
    json_t *j = *doc;
    switch (kind) {
    case CP_BODY_SIGN:
        out->token = json_string_value(json_object_get(j, "token"));
        out->csr = json_string_value(json_object_get(j, "csr"));
        if (out->token && out->csr)
            return 0;
        snprintf(why, cap,
                 "the body must be {\"token\": \"mtt_...\", \"csr\": \"-----BEGIN "
                 "CERTIFICATE REQUEST-----...\"}");
        break;
    case CP_BODY_RENEW:
        if ((out->csr = json_string_value(json_object_get(j, "csr"))))
            return 0;
        snprintf(why, cap,
                 "the body must be {\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}");
        break;
    case CP_BODY_PEER:
        out->address = json_string_value(json_object_get(j, "address"));
        if (cp_address_valid(out->address))
            return 0;
        snprintf(why, cap,
                 "\"address\" must be the string your peers reach you at (\"host:port\", 1 to "
                 "255 printable characters)");
        break;
    case CP_BODY_ADMIN: {
        json_t *rs = json_object_get(j, "reason"), *rp = json_object_get(j, "replace");
        out->reason = json_string_value(rs);
        out->replace = rp ? json_is_true(rp) : -1;
        if ((!rs || (out->reason && ca_reason_parse(out->reason) >= 0)) &&
            (!rp || json_is_boolean(rp)))
            return 0;
        snprintf(why, cap,
                 "the body is {\"reason\": \"keyCompromise|unspecified|caCompromise|"
                 "affiliationChanged|superseded|cessationOfOperation\", \"replace\": "
                 "true|false}");
        break;
    }
    default: snprintf(why, cap, "unknown body kind %d", (int)kind); break;
    }
    json_decref(j);
    *doc = NULL;
    memset(out, 0, sizeof(*out));
    out->replace = -1;
    return MESHTLS_EINVAL;
}
