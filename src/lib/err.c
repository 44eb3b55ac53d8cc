/*
 * err.c - the error convention: codes, names and the message buffer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "meshtls/err.h"

const char *meshtls_strerror(int code)
{
    switch (code) {
    case MESHTLS_OK: return "success";
    case MESHTLS_EINVAL: return "invalid value";
    case MESHTLS_ENOMEM: return "out of memory";
    case MESHTLS_EIO: return "I/O error";
    case MESHTLS_ENOENT: return "not found";
    case MESHTLS_EEXIST: return "already exists";
    case MESHTLS_EPERM: return "unsafe permissions";
    case MESHTLS_EPARSE: return "malformed input";
    case MESHTLS_EKEYMISMATCH: return "private key does not match certificate";
    case MESHTLS_EEXPIRED: return "certificate expired or not yet valid";
    case MESHTLS_EUNTRUSTED: return "certificate not trusted";
    case MESHTLS_EREVOKED: return "certificate revoked";
    case MESHTLS_EDENIED: return "denied";
    case MESHTLS_ESTORE: return "store error";
    case MESHTLS_ETLS: return "TLS library error";
    case MESHTLS_EEXPIRING: return "certificate expiring soon";
    case MESHTLS_ENOSPIFFE: return "no SPIFFE ID";
    default: return "unknown error";
    }
}

__attribute__((format(printf, 3, 0))) static void vset(struct meshtls_err *err, int code,
                                                       const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int meshtls_err_set(struct meshtls_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

int meshtls_err_set_ssl(struct meshtls_err *err, int code, const char *fmt, ...)
{
    if (!err) {
        ERR_clear_error();
        return code;
    }
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);

    size_t len = strlen(err->msg);
    unsigned long e;
    const char *sep = ": ";
    while ((e = ERR_get_error()) != 0) {
        if (len + 3 >= sizeof(err->msg))
            continue; /* keep draining the queue */
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        /* "error:0A000086:SSL routines::certificate verify failed" -> keep the reason */
        const char *reason = strrchr(buf, ':');
        reason = reason ? reason + 1 : buf;
        int n = snprintf(err->msg + len, sizeof(err->msg) - len, "%s%s", sep, reason);
        if (n > 0)
            len += (size_t)n < sizeof(err->msg) - len ? (size_t)n : sizeof(err->msg) - len - 1;
        sep = "; ";
    }
    return code;
}
