/*
 * cmd_dev.c - `meshtls dev --out DIR SERVICE...`: a throwaway PKI for local
 * development in one command.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca.h"
#include "cli.h"
#include "meshtls/meshtls.h"

static const char USAGE[] =
    "usage: meshtls dev --out DIR SERVICE...\n"
    "\n"
    "Make a throwaway PKI for development: a CA for trust domain dev.local in DIR/ca, and\n"
    "for each SERVICE a certificate (DNS SERVICE and localhost, IP 127.0.0.1 and ::1,\n"
    "SPIFFE ID spiffe://dev.local/svc/SERVICE) in DIR: SERVICE.crt, SERVICE.key, ca.crt.\n"
    "Running it again reuses DIR/ca and re-issues (adding new services).\n"
    "DEVELOPMENT ONLY: the CA keys sit next to the certificates.\n";

int cmd_dev(int argc, char **argv)
{
    const char *out = NULL;
    int opt;
    static const struct option o[] = {{"out", 1, 0, 'o'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "o:h", o, NULL)) != -1) {
        if (opt == 'o')
            out = optarg;
        else if (opt == 'h') {
            fputs(USAGE, stdout);
            return 0;
        } else
            return 2;
    }
    if (!out || optind >= argc) {
        fprintf(stderr, "meshtls dev: give --out DIR and at least one SERVICE\n\n%s", USAGE);
        return 2;
    }
    for (int i = optind; i < argc; i++)
        if (!ca_service_name_valid(argv[i])) {
            fprintf(stderr,
                    "meshtls dev: service name '%s': use 1-63 characters of a-z 0-9 . _ "
                    "-, starting with a letter or digit\n",
                    argv[i]);
            return 1;
        }
    char cadir[4096];
    snprintf(cadir, sizeof(cadir), "%s/ca", out);
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc;
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "meshtls dev: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    char db[4200];
    snprintf(db, sizeof(db), "%s/meshtls.db", cadir);
    int reuse = access(db, F_OK) == 0;
    if (!reuse && (rc = ca_init(cadir, "dev.local", MT_KEY_EC_P256, &err))) {
        cli_print_err("dev", &err, rc);
        return 1;
    }
    printf("meshtls dev: DEVELOPMENT ONLY PKI, never use it in production\n"
           "  %s CA for trust domain dev.local in %s\n",
           reuse ? "reusing the" : "created a", cadir);
    for (int i = optind; i < argc; i++) {
        const char *dns[] = {argv[i], "localhost"};
        const char *ips[] = {"127.0.0.1", "::1"};
        char sid[MESHTLS_SPIFFE_ID_MAX + 1], serial[80];
        int updated;
        if ((rc = ca_register(cadir, argv[i], dns, 2, ips, 2, NULL, &updated, sid, sizeof(sid),
                              &err)) ||
            (rc = ca_issue(cadir, argv[i], out, CA_LEAF_DAYS_DEFAULT, NULL, serial, &err))) {
            cli_print_err("dev", &err, rc);
            return 1;
        }
        printf("  %-16s %s/%s.crt  %s/%s.key  (%s)\n", argv[i], out, argv[i], out, argv[i], sid);
    }
    printf("  trust bundle     %s/ca.crt\n  CA               %s (meshtls ca ... --dir %s)\n", out,
           cadir, cadir);
    return 0;
}
