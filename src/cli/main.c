/*
 * main.c - `meshtls`: dispatch to subcommands.
 *
 * The command is linked with mimalloc unless built with -DMESHTLS_MIMALLOC=OFF
 * (CMakeLists.txt): the whole process, OpenSSL and the proxy engine included,
 * then allocates through it (docs/PERFORMANCE.md).  libmeshtls itself never
 * chooses the allocator of the program that links it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#ifdef MESHTLS_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include "cli.h"
#include "meshtls/meshtls.h"

/* MESHTLS_OPENSSL_EC_LEGACY: unset or anything but 0/off/false means on. */
static int want_legacy_ec(void)
{
    const char *v = getenv("MESHTLS_OPENSSL_EC_LEGACY");
    return !v || (strcmp(v, "0") && strcmp(v, "off") && strcmp(v, "false"));
}

const char *cli_allocator(void)
{
#ifdef MESHTLS_WITH_MIMALLOC
    static char name[32];
    if (!name[0]) {
        int v = mi_version(); /* e.g. 209 for 2.0.9 */
        snprintf(name, sizeof(name), "mimalloc %d.%d.%d", v / 100, v / 10 % 10, v % 10);
    }
    return name;
#else
    return "glibc malloc";
#endif
}

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"ca", cmd_ca, "the certificate authority: init, register, issue, rotate, revoke, crl, list"},
    {"cert", cmd_cert, "inspect, check expiry of, and verify certificate files"},
    {"dev", cmd_dev, "make a throwaway PKI and certificates for local development"},
    {"proxy", cmd_proxy, "the mTLS sidecar: proxy server (mTLS in) and proxy client (mTLS out)"},
    {"router", cmd_router, "the router's data: orgs, hosts, teams, users, grants (docs/ROUTER.md)"},
    {"connect", cmd_connect, "reach a host through `meshtls proxy router` (an ssh ProxyCommand)"},
    {"config", cmd_config,
     "show the effective configuration of every command (flags > env > file)"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meshtls <command> [options]\n"
            "\n"
            "meshtls %s - zero-trust mutual TLS for service-to-service authentication.\n"
            "\n"
            "commands:\n",
            MESHTLS_VERSION);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-8s %s\n", "version", "print the version");
    fprintf(f, "\nRun 'meshtls <command> --help' for the options of a command.\n"
               "Documentation: README.md, docs/PKI.md, docs/CONFIG.md.\n");
}

void cli_print_err(const char *what, const struct meshtls_err *err, int code)
{
    if (err && err->code != 0 && err->msg[0])
        fprintf(stderr, "meshtls %s: %s\n", what, err->msg);
    else
        fprintf(stderr, "meshtls %s: %s\n", what, meshtls_strerror(code));
}

int cli_exit_code(int code)
{
    return code == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* The proxy runs on OpenSSL 3.0's fast EC path (meshtls_tls_use_legacy_ec) unless
     * MESHTLS_OPENSSL_EC_LEGACY=0; a failure only costs speed: warn and go on.  Only the
     * proxy: it makes no keys, and key generation by name (EVP_EC_gen, used by `ca` and
     * `dev`) does not work through that path. */
    if (!strcmp(cmd, "proxy") && want_legacy_ec()) {
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (meshtls_tls_use_legacy_ec(&e) != 0)
            fprintf(stderr, "meshtls: warning: %s\n", e.msg);
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("meshtls %s\n%s\nallocator: %s\nEC keys: %s\n", MESHTLS_VERSION,
               OpenSSL_version(OPENSSL_VERSION), cli_allocator(),
               want_legacy_ec() ? "proxy: OpenSSL's built-in EC method "
                                  "(MESHTLS_OPENSSL_EC_LEGACY=0 to turn off)"
                                : "OpenSSL's provider decoders");
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "meshtls: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
