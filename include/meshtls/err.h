/*
 * meshtls/err.h - the one error convention of libmeshtls.
 *
 * Every function that can fail returns `int`: 0 on success or a negative
 * MESHTLS_E* code.  Functions that have something useful to say also take an
 * optional `struct meshtls_err *` (NULL is allowed everywhere): a fixed buffer,
 * filled without allocation, that names the file, field, peer or certificate
 * concerned and what to do about it.  Out-parameters are written only on
 * success.
 */
#ifndef MESHTLS_ERR_H
#define MESHTLS_ERR_H

#include <stddef.h>

#include "meshtls/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Error codes. 0 is success; every error is negative. */
enum meshtls_errcode {
    MESHTLS_OK = 0,
    MESHTLS_EINVAL = -1,       /**< invalid argument or value (config, flag, SPIFFE ID) */
    MESHTLS_ENOMEM = -2,       /**< allocation failed */
    MESHTLS_EIO = -3,          /**< read/write/rename of a file failed */
    MESHTLS_ENOENT = -4,       /**< a file, service, certificate or record does not exist */
    MESHTLS_EEXIST = -5,       /**< refusing to overwrite something that exists */
    MESHTLS_EPERM = -6,        /**< unsafe file permissions (e.g. a group-readable key) */
    MESHTLS_EPARSE = -7,       /**< malformed input: PEM, DER, YAML, CSR */
    MESHTLS_EKEYMISMATCH = -8, /**< a private key does not match its certificate */
    MESHTLS_EEXPIRED = -9,     /**< a certificate is expired or not yet valid */
    MESHTLS_EUNTRUSTED = -10,  /**< chain verification failed (wrong CA, bad signature) */
    MESHTLS_EREVOKED = -11,    /**< a certificate is revoked */
    MESHTLS_EDENIED = -12,     /**< refused by policy (unregistered service, CSR asks too much) */
    MESHTLS_ESTORE = -13,      /**< the store (database) failed or is locked */
    MESHTLS_ETLS = -14,        /**< an OpenSSL operation failed */
    MESHTLS_EEXPIRING = -15,   /**< a certificate is valid but expires within the warning window */
    MESHTLS_ENOSPIFFE = -16,   /**< the certificate carries no (single, valid) SPIFFE ID */
};

/** Size of the message buffer of struct meshtls_err. */
#define MESHTLS_ERR_MSG_MAX 512

/**
 * A detailed error.  Caller-owned, usually on the stack; initialise with
 * MESHTLS_ERR_INIT or memset to 0.  The library writes `code` and `msg`;
 * `msg` is always NUL-terminated.
 */
struct meshtls_err {
    int code;                      /**< the same negative code the function returned */
    char msg[MESHTLS_ERR_MSG_MAX]; /**< what went wrong, on what, and what to do */
};

#define MESHTLS_ERR_INIT                                                                           \
    {                                                                                              \
        0,                                                                                         \
        {                                                                                          \
            0                                                                                      \
        }                                                                                          \
    }

/**
 * @return a static, human-readable name for `code` (never NULL).
 */
MESHTLS_API const char *meshtls_strerror(int code);

/**
 * Record an error in `err` (which may be NULL) and return `code`, so callers
 * can write `return meshtls_err_set(err, MESHTLS_EIO, "...", ...);`.
 * Formats with vsnprintf; truncates silently.
 */
MESHTLS_API int meshtls_err_set(struct meshtls_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Like meshtls_err_set(), then appends ": " and the drained OpenSSL error
 * queue (the queue is left empty).
 */
MESHTLS_API int meshtls_err_set_ssl(struct meshtls_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
