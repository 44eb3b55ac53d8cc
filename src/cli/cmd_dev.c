/*
 * cmd_dev.c - `meshtls dev --out DIR SERVICE...`: a throwaway PKI for local
 * development in one command.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca.h"
#include "cli.h"
#include "keys.h"
#include "meshtls/meshtls.h"

#define DEV_SERVICES_MAX 64

static const char HEAD[] =
    "usage: meshtls dev --out DIR SERVICE...\n"
    "\n"
    "Make a throwaway PKI for development: a CA for trust domain dev.local in DIR/ca, and\n"
    "for each SERVICE a certificate (DNS SERVICE and localhost, IP 127.0.0.1 and ::1,\n"
    "SPIFFE ID spiffe://dev.local/svc/SERVICE) in DIR: SERVICE.crt, SERVICE.key, ca.crt.\n"
    "Running it again reuses DIR/ca and re-issues (adding new services).\n"
    "DEVELOPMENT ONLY: the CA keys sit next to the certificates.\n";

/* Make or reuse the CA in `out`/ca and issue each of `svc[0..n)`.  @return the exit status. */
static int dev_run(const char *out, const char *const *svc, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ca_service_name_valid(svc[i])) {
            fprintf(stderr,
                    "meshtls dev: service name '%s': use 1-63 characters of a-z 0-9 . _ "
                    "-, starting with a letter or digit\n",
                    svc[i]);
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
    for (size_t i = 0; i < n; i++) {
        const char *dns[] = {svc[i], "localhost"};
        const char *ips[] = {"127.0.0.1", "::1"};
        char sid[MESHTLS_SPIFFE_ID_MAX + 1], serial[80];
        int updated;
        if ((rc = ca_register(cadir, svc[i], dns, 2, ips, 2, NULL, &updated, sid, sizeof(sid),
                              &err)) ||
            (rc = ca_issue(cadir, svc[i], out, CA_LEAF_DAYS_DEFAULT, NULL, serial, &err))) {
            cli_print_err("dev", &err, rc);
            return 1;
        }
        printf("  %-16s %s/%s.crt  %s/%s.key  (%s)\n", svc[i], out, svc[i], out, svc[i], sid);
    }
    printf("  trust bundle     %s/ca.crt\n  CA               %s (meshtls ca ... --dir %s)\n", out,
           cadir, cadir);
    return 0;
}

int cmd_dev(int argc, char **argv)
{
    const char *svc[DEV_SERVICES_MAX];
    struct cli_cmd c = {.what = "dev",
                        .tables = CLI_TABLE_DEV,
                        .role = "dev",
                        .modes = CLI_KEY_DEV,
                        .pos = svc,
                        .maxpos = DEV_SERVICES_MAX};
    int status = cli_config_load(&c, argc - 1, argv + 1);
    if (status == 0 && c.help)
        cli_usage(stdout, &c, HEAD, NULL);
    if (status || c.help)
        goto out;
    status = 2;
    const char *out = cli_need(&c, "dev.out");
    if (!out)
        goto out;
    if (c.npos == 0) {
        fprintf(stderr, "meshtls dev: give at least one SERVICE (e.g. meshtls dev --out %s api)\n",
                out);
        goto out;
    }
    status = dev_run(out, svc, c.npos);
out:
    meshtls_config_free(c.cfg);
    return status;
}
