/*
 * cli.h - the `meshtls` subcommands.  Each takes the arguments after its own
 * name (argv[0] is the subcommand name) and returns the process exit status.
 * The cli only parses arguments and wires library/CA calls; it prints errors
 * as "meshtls <cmd>: <message>" on stderr.
 */
#ifndef MESHTLS_CLI_H
#define MESHTLS_CLI_H

struct meshtls_err;

int cmd_ca(int argc, char **argv);           /* cmd_ca.c     - meshtls ca ...   */
int cmd_cert(int argc, char **argv);         /* cmd_cert.c   - meshtls cert ... */
int cmd_dev(int argc, char **argv);          /* cmd_dev.c    - meshtls dev ...  */
int cmd_config(int argc, char **argv);       /* cmd_config.c - meshtls config ... */
int cmd_proxy(int argc, char **argv);        /* cmd_proxy.c  - meshtls proxy server|client */
int cmd_proxy_router(int argc, char **argv); /* cmd_router.c - meshtls proxy router */
int cmd_router(int argc, char **argv);       /* cmd_router.c - meshtls router (data) */
int cmd_connect(int argc, char **argv);      /* cmd_connect.c - meshtls connect */

/* cmd_ca_serve.c - meshtls ca serve, meshtls ca token (dispatched by cmd_ca) */
int cmd_ca_serve(int argc, char **argv);
int cmd_ca_token(int argc, char **argv);

/** Print "meshtls <what>: <err->msg>" (or the code's name) to stderr. */
void cli_print_err(const char *what, const struct meshtls_err *err, int code);

/** Exit status for a MESHTLS_E* code (2 usage/input, 1 otherwise). */
int cli_exit_code(int code);

/** The allocator this build of the command runs on, e.g. "mimalloc 2.0.9" or "glibc malloc"
 *  (the MESHTLS_MIMALLOC build option).  @return a static string; never NULL. */
const char *cli_allocator(void);

#endif
