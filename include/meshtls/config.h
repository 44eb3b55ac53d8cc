/*
 * meshtls/config.h - settings from command-line flags, environment variables
 * and a YAML file, in that order of precedence, over built-in defaults.
 *
 * Every setting is a *key* with a dotted name ("server.cert_file") described
 * by one row of a table (struct meshtls_config_keydef): its type, default,
 * command-line flag and environment variables.  The canonical variable is
 * MESHTLS_ + the name upper-cased with '.' -> '_' (MESHTLS_SERVER_CERT_FILE);
 * a key may also have an alias (the GRPC_* names of Kubernetes deployments).
 * The library registers the server.*, client.* and log.* keys; a consumer
 * (the proxy) registers its own table with meshtls_config_add_keys().
 *
 * A configuration keeps one value per key and per source, so the effective
 * value is always flag > environment > file > default, whatever order the
 * sources are loaded in, and every value remembers where it came from ("--cert",
 * "GRPC_SERVER_CERT_PATH", "app.yaml:3", "default").
 *
 * A command's command line comes from the same rows: meshtls_config_parse_args() sets each
 * key from its flag, meshtls_config_print_flags() prints --help, so a command has no option
 * table, default or number parser of its own (`meshtls proxy` is the model).
 *
 * Ownership: struct meshtls_config is opaque and caller-owned (_new/_free).
 * Every string it returns is borrowed from it and stays valid until it is
 * freed or the same key is set again from the same source.  Not thread-safe:
 * build it in one thread, then read it from any.  docs/CONFIG.md lists every
 * key.
 */
#ifndef MESHTLS_CONFIG_H
#define MESHTLS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "meshtls/err.h"
#include "meshtls/export.h"
#include "meshtls/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Where a value came from; a higher source wins. */
enum meshtls_config_source {
    MESHTLS_SRC_DEFAULT = 0,
    MESHTLS_SRC_FILE = 1,
    MESHTLS_SRC_ENV = 2,
    MESHTLS_SRC_FLAG = 3,
};

/** The type of a key: how its text value is checked. */
enum meshtls_config_type {
    MESHTLS_CFG_STR = 1,      /**< any non-empty text */
    MESHTLS_CFG_PATH,         /**< a file name (existence is checked when it is used) */
    MESHTLS_CFG_BOOL,         /**< true/false, 1/0, yes/no, on/off (any case) */
    MESHTLS_CFG_INT,          /**< a decimal integer in [min, max] */
    MESHTLS_CFG_ENUM,         /**< one of `choices` ("a|b|c") */
    MESHTLS_CFG_SPIFFE_ID,    /**< a SPIFFE ID (spiffe://td/path) */
    MESHTLS_CFG_TRUST_DOMAIN, /**< a SPIFFE trust domain */
    MESHTLS_CFG_DURATION,     /**< N followed by ms, s, m or h (bare N = seconds), or "off" (0);
                                   [min, max] in ms */
};

/**
 * One key.  Tables of these are static data: meshtls_config_add_keys()
 * borrows them for the life of the configuration.
 */
struct meshtls_config_keydef {
    const char *name;      /**< "section.key": [a-z0-9_], exactly one '.' */
    int type;              /**< enum meshtls_config_type */
    const char *def;       /**< default, as text; NULL = no default (unset) */
    const char *alias;     /**< a second environment variable (e.g. GRPC_*), or NULL */
    const char *flag;      /**< command-line flag ("--cert"), or NULL */
    const char *flag_sets; /**< non-NULL: the flag takes no argument and sets this value */
    const char *choices;   /**< MESHTLS_CFG_ENUM: "a|b|c" */
    long min, max;         /**< MESHTLS_CFG_INT / _DURATION (ms): inclusive range */
    const char *help;      /**< one line for `meshtls config --keys`, --help and the docs */
    /* How a command takes the key on its command line (meshtls_config_parse_args) and
     * shows it (meshtls_config_print_flags).  Zero is a good default for each. */
    unsigned modes;      /**< the consumer's mode bits that take the flag; 0 = every mode */
    const char *metavar; /**< the value's name in --help ("ADDR"); NULL = from the type */
    const char *group;   /**< --help heading; NULL = the section name */
    unsigned opts;       /**< MESHTLS_KEY_* bits */
};

/** A second name of a key's flag, kept for old command lines ("--server-cert" of 004). */
struct meshtls_config_flag_alias {
    const char *flag; /**< "--server-cert" */
    const char *key;  /**< "router.cert": the key whose flag it also is */
};

/*
 * `modes` bits.  `meshtls config` registers every command's table and passes the proxy's
 * bits, so each consumer keeps to its own bits: the proxy 0-1 (PX_KEY_*), `meshtls ca` 2-15
 * (CA_KEY_*, src/cli/keys.h), the router 16-17 (RT_KEY_*), `meshtls connect` 18, `meshtls
 * cert` 19-21, `meshtls dev` 22, the library 31.
 */

/**
 * A `modes` bit no consumer uses for its own modes: the key's flag is for the library's
 * own users (`meshtls config`, programs calling meshtls_config_parse_args with modes 0),
 * not for a command that passes its mode bits (the proxy always requires client
 * certificates, so it takes no --insecure-no-client-cert).
 */
#define MESHTLS_MODE_LIBRARY (1u << 31)

/** The flag may be repeated; each use adds one item (the value lists them, '\n' between). */
#define MESHTLS_KEY_REPEAT 0x1u
/** Giving the flag twice is an error (a second value would silently replace the first). */
#define MESHTLS_KEY_ONCE 0x2u
/**
 * An argument of one invocation (`meshtls ca revoke --serial X`), not a setting: only its flag
 * sets it.  It has no environment variable and no YAML key, so a variable left in a shell can
 * never make every `ca rotate` a `--force` one.  meshtls_config_key_env() returns "".
 */
#define MESHTLS_KEY_ARG 0x4u
/** A secret (a password): meshtls_config_shown() prints "***" for it, never the value. */
#define MESHTLS_KEY_SECRET 0x8u
/** A URL that may carry a password (postgres://u:PW@h/db): shown with the password as ***. */
#define MESHTLS_KEY_URL 0x10u

struct meshtls_config;

/**
 * Create an empty configuration (defaults only) that knows the library's
 * keys (server.*, client.*, log.*, and for now proxy.*).
 * @param out new configuration; free with meshtls_config_free().
 * @return 0 or MESHTLS_ENOMEM.
 */
MESHTLS_API int meshtls_config_new(struct meshtls_config **out);

/** Free `cfg` and every string it handed out (NULL is fine). */
MESHTLS_API void meshtls_config_free(struct meshtls_config *cfg);

/**
 * Register more keys (a consumer's own section).  Call it before loading
 * anything.  `defs` is borrowed and must outlive `cfg` (use a static table).
 * @return 0; MESHTLS_EINVAL for a malformed row (bad name, default of the
 * wrong type, empty range); MESHTLS_EEXIST if a name, variable or section
 * "peer_tls" is taken; MESHTLS_ENOMEM.  On error no key of `defs` is added.
 */
MESHTLS_API int meshtls_config_add_keys(struct meshtls_config *cfg,
                                        const struct meshtls_config_keydef *defs, size_t n,
                                        struct meshtls_err *err);

/**
 * Register more names for keys' flags.  meshtls_config_parse_args() takes each like the key's
 * own flag (where that applies); --help prints it beside it ("--cert, --server-cert FILE").
 * `v` is borrowed and must outlive `cfg` (a static table).
 * @return 0; MESHTLS_EINVAL for an unknown key, a key without a flag or a name not "--x";
 *         MESHTLS_ENOMEM.  On error no alias of `v` is added.
 */
MESHTLS_API int meshtls_config_add_flag_aliases(struct meshtls_config *cfg,
                                                const struct meshtls_config_flag_alias *v, size_t n,
                                                struct meshtls_err *err);

/**
 * Load a YAML file of at most 1 MiB: one document whose top level maps
 * section names (`server:`, `client:`, `log:`, any registered section) to
 * mappings of key: scalar, plus `peer_tls:` (cert_file, key_file, ca_file,
 * server_name), which fills both roles unless a role sets the key itself.
 * Unknown sections or keys, a key given twice, lists or mappings where a value
 * is expected, anchors, aliases, tags and several documents are errors that
 * name "FILE:LINE" and the key.  An empty file configures nothing.
 * @param path borrowed; it labels values and messages.
 */
MESHTLS_API int meshtls_config_load_file(struct meshtls_config *cfg, const char *path,
                                         struct meshtls_err *err);

/**
 * Same as meshtls_config_load_file(), from `len` bytes of `buf` (borrowed,
 * need not be NUL-terminated).  `name` (borrowed, may be NULL) labels
 * values and messages in place of the file name.
 */
MESHTLS_API int meshtls_config_load_buffer(struct meshtls_config *cfg, const char *buf, size_t len,
                                           const char *name, struct meshtls_err *err);

/**
 * Read every key's MESHTLS_* variable and alias from `envp` ("NAME=value"
 * strings, NULL-terminated, borrowed; NULL = the process environment).  An
 * invalid value is an error naming the variable and the key.  When a
 * MESHTLS_* variable and its alias are both set, MESHTLS_* wins (and a debug
 * line says so); if a name appears twice in `envp`, the first counts, as with
 * getenv().  Unrelated variables are ignored.
 */
MESHTLS_API int meshtls_config_load_env(struct meshtls_config *cfg, char *const *envp,
                                        struct meshtls_err *err);

/**
 * Set `key` from a command-line flag.  The value is checked by the key's
 * type.  For a MESHTLS_KEY_REPEAT key, a second call adds an item (the value
 * then lists them with '\n' between); otherwise it replaces the value.  `flag` (borrowed, copied;
 * NULL = the key's own flag) labels it.
 * @return 0; MESHTLS_EINVAL for an unknown key or an invalid value.
 */
MESHTLS_API int meshtls_config_set(struct meshtls_config *cfg, const char *key, const char *value,
                                   const char *flag, struct meshtls_err *err);

/** A command's own option, beside the key flags (--config, --check, --help). */
struct meshtls_config_opt {
    const char *flag;   /**< "--config" */
    int has_arg;        /**< 1: takes a value */
    const char **value; /**< out, optional: the last value given (borrowed from argv) */
    int *count;         /**< out, optional: incremented per use */
};

/**
 * Parse a command line against the key table: every key whose `flag` applies sets it
 * (source "flag"), `opts` are the command's own options.  Accepts "--flag VALUE" and
 * "--flag=VALUE"; "--" ends the options.  A flag applies when its key is in section `role`
 * ("server"/"client"; keys of the other role's section do not), or in any other section
 * with `modes` & the key's modes (or the key's modes are 0).  A switch (flag_sets) takes no
 * value.  A repeated flag replaces its value, adds an item (MESHTLS_KEY_REPEAT), or is an
 * error (MESHTLS_KEY_ONCE).
 * @param argv borrowed; argv[0] is an option, not the program name.
 * @return 0; MESHTLS_EPARSE (a usage error) naming the flag for an unknown option (with a
 *         suggestion), a flag of another mode, a missing value, a value given to a switch, a
 *         second MESHTLS_KEY_ONCE flag, a positional argument; MESHTLS_EINVAL for a value
 *         the key refuses (type, range), named as "--flag: 'v' for key: expected ...".
 *         Keys set before the error stay set.
 */
MESHTLS_API int meshtls_config_parse_args(struct meshtls_config *cfg, int argc, char *const *argv,
                                          const char *role, unsigned modes,
                                          const struct meshtls_config_opt *opts, size_t nopts,
                                          struct meshtls_err *err);

/**
 * meshtls_config_parse_args() for a command that also takes positional arguments
 * (`meshtls ca issue SERVICE`): each argument that is not an option, and each one after
 * "--", goes to `pos` in order (borrowed from argv), at most `maxpos` of them; "-" alone is
 * positional.  `*npos` (may be NULL when `maxpos` is 0) is set to the number stored.
 * @return as meshtls_config_parse_args(); one positional argument more than `maxpos` is
 *         MESHTLS_EPARSE naming it.
 */
MESHTLS_API int meshtls_config_parse_cmdline(struct meshtls_config *cfg, int argc,
                                             char *const *argv, const char *role, unsigned modes,
                                             const struct meshtls_config_opt *opts, size_t nopts,
                                             const char **pos, size_t maxpos, size_t *npos,
                                             struct meshtls_err *err);

/**
 * Print the flags that meshtls_config_parse_args(cfg, ..., role, modes, ...) accepts, one
 * line each, grouped by the keys' `group` in table order, each flag once: "  --max-conns N
 * help (default 10000)".  `role` NULL: both roles' flags, one of only one role tagged
 * "[server]"; several `modes` bits: a flag of only some tagged with their
 * `mode_names[bit]` ("[server]"; `mode_names` may be NULL).
 */
MESHTLS_API void meshtls_config_print_flags(const struct meshtls_config *cfg, FILE *f,
                                            const char *role, unsigned modes,
                                            const char *const *mode_names, size_t nmode_names);

/**
 * Apply log.level and log.format to the process's logger (meshtls_log_set_level/_json).
 * @return 0, or MESHTLS_EINVAL (only with a broken table: values are checked when set).
 */
MESHTLS_API int meshtls_config_apply_log(const struct meshtls_config *cfg, struct meshtls_err *err);

/**
 * The effective value of `key`, or NULL if it is unset and has no default
 * (or is not a key).
 * @param source optional: where the value came from ("--cert",
 *               "GRPC_SERVER_CERT_PATH", "app.yaml:3", "default", or "unset").
 */
MESHTLS_API const char *meshtls_config_get(const struct meshtls_config *cfg, const char *key,
                                           const char **source);

/**
 * The effective value of `key` as it may be printed: "***" for a MESHTLS_KEY_SECRET key, the
 * URL with its password replaced by "***" for a MESHTLS_KEY_URL key, else the value itself.
 * `meshtls config` prints only this.
 * @param buf caller's buffer the redacted form is written to (`cap` bytes).
 * @param source optional, as meshtls_config_get().
 * @return `buf`, the value (borrowed from `cfg`), or NULL when unset.
 */
MESHTLS_API const char *meshtls_config_shown(const struct meshtls_config *cfg, const char *key,
                                             char *buf, size_t cap, const char **source);

/**
 * The effective value of a key a command cannot do without.
 * @param out written on success (borrowed from `cfg`).
 * @return 0; MESHTLS_EINVAL "KEY is not set: give --flag, set MESHTLS_..., or add 'k:' under
 *         's:' in the config file" (an argument key: "give --flag").
 */
MESHTLS_API int meshtls_config_need(const struct meshtls_config *cfg, const char *key,
                                    const char **out, struct meshtls_err *err);

/**
 * The effective value of a boolean key.
 * @return 0; MESHTLS_ENOENT if unset without default; MESHTLS_EINVAL if
 * `key` is unknown or not a MESHTLS_CFG_BOOL key.  `*out` written on success.
 */
MESHTLS_API int meshtls_config_get_bool(const struct meshtls_config *cfg, const char *key, int *out,
                                        struct meshtls_err *err);

/**
 * The effective value of an integer key, or of a duration key in ms.
 * @return as meshtls_config_get_bool().
 */
MESHTLS_API int meshtls_config_get_int(const struct meshtls_config *cfg, const char *key, long *out,
                                       struct meshtls_err *err);

/** Number of known keys (built-in and registered). */
MESHTLS_API size_t meshtls_config_key_count(const struct meshtls_config *cfg);

/** The i-th key in registration order (borrowed), or NULL past the end. */
MESHTLS_API const struct meshtls_config_keydef *meshtls_config_key(const struct meshtls_config *cfg,
                                                                   size_t i);

/**
 * The environment variables of `key`, canonical first: "MESHTLS_SERVER_CERT_FILE,
 * GRPC_SERVER_CERT_PATH" (borrowed from `cfg`), or NULL for an unknown key.
 */
MESHTLS_API const char *meshtls_config_key_env(const struct meshtls_config *cfg, const char *key);

/**
 * Fill `out` for the server (`role` "server") or client ("client") role and
 * check that the required keys are set: cert_file, key_file, ca_file, and
 * for a client one of server_name / verify_spiffe_id / verify_trust_domain.
 * A missing key is an error naming the key, its environment variables and its
 * flag.  Strings in `out` are borrowed from `cfg`; fields the configuration
 * has no key for (caches, tickets) are zero.  `out` is written only on success.
 */
MESHTLS_API int meshtls_config_tls_opts(const struct meshtls_config *cfg, const char *role,
                                        struct meshtls_tls_opts *out, struct meshtls_err *err);

/** meshtls_config_tls_opts(cfg, "server", out, err). */
MESHTLS_API int meshtls_config_server_opts(const struct meshtls_config *cfg,
                                           struct meshtls_tls_opts *out, struct meshtls_err *err);

/** meshtls_config_tls_opts(cfg, "client", out, err). */
MESHTLS_API int meshtls_config_client_opts(const struct meshtls_config *cfg,
                                           struct meshtls_tls_opts *out, struct meshtls_err *err);

#ifdef __cplusplus
}
#endif
#endif
