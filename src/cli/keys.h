/*
 * keys.h - the key tables of the commands that live in src/cli (meshtls ca, ca serve, ca
 * token, connect, cert, dev) and the one way every command turns its command line, the
 * environment and --config FILE into a configuration (cli_config_load).
 *
 * Mode bits: each subcommand is one bit of the keys' `modes`, so a flag of another
 * subcommand is refused by name ("--serial does not apply to this mode") and --help lists
 * only what applies.  The bits keep clear of the proxy's (0-1) and the router's (16-17),
 * because `meshtls config` registers every table at once (include/meshtls/config.h).
 */
#ifndef MESHTLS_CLI_KEYS_H
#define MESHTLS_CLI_KEYS_H

#include <stddef.h>
#include <stdio.h>

#include "meshtls/config.h"

/* meshtls ca SUBCOMMAND */
#define CA_KEY_INIT (1u << 2)
#define CA_KEY_REGISTER (1u << 3)
#define CA_KEY_ISSUE (1u << 4)
#define CA_KEY_ROTATE (1u << 5)
#define CA_KEY_REVOKE (1u << 6)
#define CA_KEY_CRL (1u << 7)
#define CA_KEY_LIST (1u << 8)
#define CA_KEY_SERVICES (1u << 9)
#define CA_KEY_UNREGISTER (1u << 10)
#define CA_KEY_RENEW (1u << 11) /* renew-intermediate */
#define CA_KEY_ROOT_CRL (1u << 12)
#define CA_KEY_TOKEN (1u << 13)
#define CA_KEY_SERVE (1u << 15)
#define CA_KEY_OFFLINE 0x1ffcu /* every subcommand of the offline CA (init .. root-crl) */
/* meshtls connect, cert, dev */
#define CLI_KEY_CONNECT (1u << 18)
#define CLI_KEY_INSPECT (1u << 19)
#define CLI_KEY_CHECK (1u << 20)
#define CLI_KEY_VERIFY (1u << 21)
#define CLI_KEY_DEV (1u << 22)

/* Which tables cli_config_register() adds (the core keys are always there). */
#define CLI_TABLE_PROXY 0x1u
#define CLI_TABLE_ROUTER 0x2u
#define CLI_TABLE_CA 0x4u /* ca.* and ca_serve.*: `ca serve` dispatches from `ca` */
#define CLI_TABLE_CONNECT 0x8u
#define CLI_TABLE_CERT 0x10u
#define CLI_TABLE_DEV 0x20u
#define CLI_TABLE_ALL 0x3fu

/** The name of each mode bit for --help tags and `meshtls config --keys` ("revoke"), by
 *  bit number; "" for a bit nobody uses. */
extern const char *const cli_mode_names[32];

/**
 * Register the tables `tables` (CLI_TABLE_*) on `cfg` (and the router's flag aliases).
 * @return 0, or the error of meshtls_config_add_keys().
 */
int cli_config_register(struct meshtls_config *cfg, unsigned tables, struct meshtls_err *err);

/* One command line: what cli_config_load() needs, and what it hands back. */
struct cli_cmd {
    const char *what; /* "ca issue": messages start "meshtls ca issue: " */
    unsigned tables;  /* CLI_TABLE_* */
    const char *role; /* meshtls_config_parse_args' role: the section of the command */
    unsigned modes;   /* this subcommand's bit */
    const struct meshtls_config_opt *opts; /* more own options (--check), or NULL */
    size_t nopts;
    const char **pos; /* positional arguments out (borrowed from argv), or NULL */
    size_t maxpos;
    size_t npos;                /* out */
    int help;                   /* out: --help was given (nothing else was loaded) */
    const char *config_file;    /* out: --config FILE, or NULL */
    struct meshtls_config *cfg; /* out: owned by the caller (meshtls_config_free) */
};

/**
 * Parse `argv` (argv[0] is the first option) against the tables with --config FILE and
 * --help, then, unless --help was given, load FILE, the environment and apply log.*.
 * Flags > environment > file > default, as every command.
 * @return 0; 2 after printing a usage or configuration error ("meshtls WHAT: ..."); 1 when
 *         out of memory.  `c->cfg` is set in every case (free it).
 */
int cli_config_load(struct cli_cmd *c, int argc, char **argv);

/**
 * A key a command needs: its value, or print "meshtls WHAT: KEY is not set: give --flag, set
 * MESHTLS_..." and return NULL.
 */
const char *cli_need(const struct cli_cmd *c, const char *key);

/** An integer key (checked when set; all the cli's integer keys have defaults or are
 *  tested with meshtls_config_get first).  @return its value, or `dflt` when unset. */
long cli_int(const struct meshtls_config *cfg, const char *key, long dflt);

/** A boolean key, `dflt` when unset. */
int cli_bool(const struct meshtls_config *cfg, const char *key, int dflt);

/**
 * Print --help: `head` (usage lines and what the command does), the flags the tables give
 * this mode, then the command's own options (--config, --help, and `extra`, "" for none).
 */
void cli_usage(FILE *f, const struct cli_cmd *c, const char *head, const char *extra);

/** cli_usage() of a command line not parsed yet (`meshtls ca --help`): the flags of `modes`
 *  of section `role` in `tables`, each once and tagged with the modes that take it. */
void cli_usage_of(FILE *f, unsigned tables, const char *role, unsigned modes, const char *head);

/**
 * Overwrite in place the passwords of argv[0..argc) (a --store URL's, --db-password's) once
 * the configuration holds copies, so that `ps` and /proc/PID/cmdline stop showing them.
 */
void cli_hide_passwords(int argc, char **argv);

/**
 * The CA directory of a `meshtls ca` subcommand `sub` from the keys `dir_key` and
 * `store_key` of `cfg` (borrowed): --dir alone; --store sqlite:DIR/meshtls.db alone (DIR,
 * into `dirbuf`, cap bytes); or both, when the data lives elsewhere (a postgres:// URL):
 * the directory then keeps the key files and every ca_* call on it uses the URL for the
 * rest of the process (ca_store_use).  @return the directory (borrowed from `cfg` or
 * `dirbuf`), or NULL after printing to stderr what is wrong (exit status 2).
 */
const char *cli_ca_dir(const struct meshtls_config *cfg, const char *sub, const char *dir_key,
                       const char *store_key, char *dirbuf, size_t cap);
/** As cli_ca_dir(), from the values `dir` and `store` (either may be NULL); `dir_key` names
 * the directory's key in the hint. */
const char *cli_ca_resolve(const char *sub, const char *dir, const char *store, const char *dir_key,
                           char *dirbuf, size_t cap);

#endif
