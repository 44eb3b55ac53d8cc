/*
 * meshtls/config.h - TLS configuration from command-line flags, environment
 * variables and a YAML file, in that order of precedence, over defaults.
 *
 * Keys are dotted names ("server.cert_file"); each has a canonical
 * environment variable (MESHTLS_ + upper-cased name, '.' -> '_', e.g.
 * MESHTLS_SERVER_CERT_FILE) and possibly aliases (the GRPC_* names of
 * Kubernetes deployments).  Every value remembers where it came from.
 * docs/CONFIG.md lists every key.
 *
 * A struct meshtls_config is caller-owned (meshtls_config_new / _free); the
 * strings it returns stay valid until it is freed or the same key is set
 * again from the same source.
 */
#ifndef MESHTLS_CONFIG_H
#define MESHTLS_CONFIG_H

#include <stddef.h>

#include "meshtls/err.h"
#include "meshtls/export.h"
#include "meshtls/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Where a value came from; higher wins. */
enum meshtls_config_source {
    MESHTLS_SRC_DEFAULT = 0,
    MESHTLS_SRC_FILE = 1,
    MESHTLS_SRC_ENV = 2,
    MESHTLS_SRC_FLAG = 3,
};

struct meshtls_config;

/** @param out new empty configuration (defaults only); free with meshtls_config_free(). */
MESHTLS_API int meshtls_config_new(struct meshtls_config **out);
MESHTLS_API void meshtls_config_free(struct meshtls_config *cfg);

/**
 * Load a YAML file (at most 1 MiB): mappings `server:`, `client:`, `log:` with
 * the keys of docs/CONFIG.md, and `peer_tls:` (cert_file, key_file, ca_file,
 * server_name) which fills both roles unless a role sets the key itself.
 * Errors name "FILE:LINE" and the key.
 */
MESHTLS_API int meshtls_config_load_file(struct meshtls_config *cfg, const char *path,
                                         struct meshtls_err *err);
/** Same, from `len` bytes of `buf`; `name` labels messages. */
MESHTLS_API int meshtls_config_load_buffer(struct meshtls_config *cfg, const char *buf,
                                           size_t len, const char *name,
                                           struct meshtls_err *err);

/**
 * Read MESHTLS_* and GRPC_* variables from `envp` ("NAME=value" strings,
 * NULL-terminated; NULL = the process environment).  A variable with an
 * invalid value is an error naming it.  When a MESHTLS_* variable and its
 * GRPC_* alias are both set, MESHTLS_* wins.
 */
MESHTLS_API int meshtls_config_load_env(struct meshtls_config *cfg, char *const *envp,
                                        struct meshtls_err *err);

/**
 * Set `key` from a command-line flag; `flag` (e.g. "--cert") labels it.
 * The value is validated by the key's type.
 */
MESHTLS_API int meshtls_config_set(struct meshtls_config *cfg, const char *key,
                                   const char *value, const char *flag,
                                   struct meshtls_err *err);

/**
 * The effective value of `key` (NULL if unset and without default).
 * @param source optional: where it came from ("--cert", "GRPC_SERVER_CERT_PATH",
 *               "app.yaml:3", "default").
 */
MESHTLS_API const char *meshtls_config_get(const struct meshtls_config *cfg, const char *key,
                                           const char **source);

/** The i-th known key name, or NULL past the end (for listing). */
MESHTLS_API const char *meshtls_config_key(size_t i);
/** The environment variables of `key`, comma-separated ("" if none). */
MESHTLS_API const char *meshtls_config_key_env(const char *key);

/**
 * Fill `out` for the server (`role` "server") or client ("client") role.
 * Strings in `out` are borrowed from `cfg`.  A missing required value is an
 * error naming the key, its environment variables and its flag.
 */
MESHTLS_API int meshtls_config_tls_opts(const struct meshtls_config *cfg, const char *role,
                                        struct meshtls_tls_opts *out, struct meshtls_err *err);

#ifdef __cplusplus
}
#endif
#endif
