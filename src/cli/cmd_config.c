/*
 * cmd_config.c - `meshtls config`: show the effective TLS configuration and
 * where each value came from (flag > environment > YAML file > default);
 * with --check, validate a role's settings and its files.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>

#include "cli.h"
#include "meshtls/meshtls.h"

static const char USAGE[] =
    "usage: meshtls config [--config FILE] [--role server|client] [--json] [--check]\n"
    "                      [--cert F] [--key F] [--cacert F] [--crl F] [--server-name N]\n"
    "                      [--verify-spiffe-id URI] [--verify-trust-domain TD]\n"
    "                      [--tls-min-version 1.2|1.3]\n"
    "\n"
    "Print every configuration key with its effective value and its source. Precedence:\n"
    "command-line flags, then environment (MESHTLS_*, GRPC_*), then the YAML file, then\n"
    "defaults. Flags apply to --role (default server). --check also builds the role's TLS\n"
    "context from the files and fails with the error that names what is wrong.\n"
    "See docs/CONFIG.md.\n";

int cmd_config(int argc, char **argv)
{
    const char *file = NULL, *role = "server";
    int json = 0, check = 0, opt, rc;
    struct meshtls_config *cfg = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    static const struct option o[] = {
        {"config", 1, 0, 'f'}, {"role", 1, 0, 'r'}, {"json", 0, 0, 'j'}, {"check", 0, 0, 'c'},
        {"cert", 1, 0, 1}, {"key", 1, 0, 2}, {"cacert", 1, 0, 3}, {"crl", 1, 0, 4},
        {"server-name", 1, 0, 5}, {"verify-spiffe-id", 1, 0, 6},
        {"verify-trust-domain", 1, 0, 7}, {"tls-min-version", 1, 0, 8}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    static const char *const keys[] = {NULL, "cert_file", "key_file", "ca_file", "crl_file",
                                       "server_name", "verify_spiffe_id",
                                       "verify_trust_domain", "min_tls_version"};
    struct {
        const char *key_suffix, *flag, *value;
    } flags[16];
    int nflags = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'f')
            file = optarg;
        else if (opt == 'r')
            role = optarg;
        else if (opt == 'j')
            json = 1;
        else if (opt == 'c')
            check = 1;
        else if (opt == 'h') {
            fputs(USAGE, stdout);
            return 0;
        } else if (opt >= 1 && opt <= 8 && nflags < 16) {
            flags[nflags].key_suffix = keys[opt];
            flags[nflags].flag = o[opt + 3].name;
            flags[nflags++].value = optarg;
        } else
            return 2;
    }
    if (strcmp(role, "server") && strcmp(role, "client")) {
        fprintf(stderr, "meshtls config: --role '%s': expected server or client\n", role);
        return 2;
    }
    if (meshtls_config_new(&cfg) != 0)
        return 1;
    if (file && (rc = meshtls_config_load_file(cfg, file, &err)))
        goto fail;
    if ((rc = meshtls_config_load_env(cfg, NULL, &err)))
        goto fail;
    for (int i = 0; i < nflags; i++) {
        char key[64], flag[40];
        snprintf(key, sizeof(key), "%s.%s", role, flags[i].key_suffix);
        snprintf(flag, sizeof(flag), "--%s", flags[i].flag);
        if ((rc = meshtls_config_set(cfg, key, flags[i].value, flag, &err)))
            goto fail;
    }
    if (json)
        putchar('{');
    for (size_t i = 0; meshtls_config_key(i); i++) {
        const char *k = meshtls_config_key(i), *src = NULL;
        const char *v = meshtls_config_get(cfg, k, &src);
        if (json)
            printf("%s\"%s\":{\"value\":%s%s%s,\"source\":\"%s\"}", i ? "," : "", k,
                   v ? "\"" : "", v ? v : "null", v ? "\"" : "", src);
        else
            printf("%-28s %-40s %s\n", k, v ? v : "-", src);
    }
    if (json)
        printf("}\n");
    if (check) {
        struct meshtls_tls_opts opts;
        SSL_CTX *ctx = NULL;
        if ((rc = meshtls_config_tls_opts(cfg, role, &opts, &err)))
            goto fail;
        rc = !strcmp(role, "server") ? meshtls_tls_server_ctx_new(&opts, &ctx, &err)
                                     : meshtls_tls_client_ctx_new(&opts, &ctx, &err);
        SSL_CTX_free(ctx);
        if (rc)
            goto fail;
        fprintf(stderr, "meshtls config: %s configuration OK\n", role);
    }
    meshtls_config_free(cfg);
    return 0;
fail:
    cli_print_err("config", &err, rc);
    meshtls_config_free(cfg);
    return 1;
}
