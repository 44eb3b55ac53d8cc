/*
 * cmd_proxy.c - `meshtls proxy server|client`: the command line, the environment and the
 * YAML file into one configuration (the key tables: src/lib/config_keys.c and
 * src/proxy/config_keys.c), that into a struct px_config (px_config_from), then px_run()
 * or, with --check, px_config_check().
 *
 * No flag, default, range or parser is written here: the tables hold them, and --help is
 * printed from them.  Flag names follow ghostunnel.
 *
 * Exit status: 0 fine; 2 a configuration or usage error (also every --check failure);
 * 1 a failure to build or run (a certificate that does not load, a port in use).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "meshtls/meshtls.h"
#include "proxy.h"

/* Names of the key mode bits (PX_KEY_SERVER, PX_KEY_CLIENT), for --help tags. */
static const char *const MODE_NAMES[] = {"server", "client"};

/* `mode` 0: both modes' flags, each once and tagged with its mode. */
static void proxy_usage(FILE *f, const struct meshtls_config *cfg, int mode)
{
    fputs("usage: meshtls proxy server --listen ADDR --target ADDR --cert F --key F --cacert F\n"
          "                            (--allow-all | --allow-* ... | --policy F) [options]\n"
          "       meshtls proxy client --listen ADDR --target ADDR --cert F --key F --cacert F\n"
          "                            (--server-name N | --verify-spiffe-id URI |\n"
          "                             --verify-trust-domain TD) [options]\n"
          "\n"
          "server: accepts mutual TLS on --listen, checks the client's identity against the\n"
          "        policy, and relays to the plaintext --target (loopback unless --target-tls).\n"
          "client: accepts plaintext on --listen (keep it on loopback) and relays over mutual\n"
          "        TLS to --target, verifying the server's identity.\n"
          "\n",
          f);
    if (cfg)
        meshtls_config_print_flags(
            cfg, f, mode ? (mode == PX_MODE_SERVER ? "server" : "client") : NULL,
            mode ? PX_KEY_MODE(mode) : PX_KEY_SERVER | PX_KEY_CLIENT, MODE_NAMES, 2);
    fputs("command:\n"
          "  --config FILE                  YAML file: server:/client: TLS keys, log:, proxy:\n"
          "  --check                        validate everything start would (files, keys,\n"
          "                                 policy, --service, addresses), bind nothing, exit\n"
          "                                 0 with \"configuration ok\" or 2 with each error\n"
          "  --help                         this text\n"
          "\n"
          "Every flag is also a key: MESHTLS_<KEY> in the environment (MESHTLS_PROXY_MAX_CONNS,\n"
          "GRPC_* aliases) and KEY under its section of --config. Flags beat the environment,\n"
          "which beats the file. SIGHUP (and a change of a watched file, --config included)\n"
          "reads the configuration again and rebuilds TLS, policy, target and ALPN for new\n"
          "connections; a failed reload keeps everything in service. `meshtls config --keys`\n"
          "lists the keys; see docs/PROXY.md and docs/CONFIG.md.\n",
          f);
}

/* --check: print every error found (the first of each class) or a one-line summary.
 * `rule_error`: what px_config_rules() refused, or NULL. */
static int check(const struct px_config *c, const char *rule_error)
{
    const char *m = c->mode == PX_MODE_SERVER ? "server" : "client";
    struct px_check_report rep;
    memset(&rep, 0, sizeof(rep));
    if (rule_error) {
        snprintf(rep.msg[PX_CHECK_POLICY], sizeof(rep.msg[PX_CHECK_POLICY]), "%s", rule_error);
        rep.nerrors = 1;
    }
    if (px_config_check(c, &rep) != 0) {
        for (int i = 0; i < PX_CHECK_N; i++)
            if (rep.msg[i][0])
                fprintf(stderr, "meshtls proxy %s: %s: %s\n", m,
                        px_check_class_name((enum px_check_class)i), rep.msg[i]);
        fprintf(stderr, "meshtls proxy %s: configuration has %d error%s\n", m, rep.nerrors,
                rep.nerrors == 1 ? "" : "s");
        return 2;
    }
    printf("configuration ok: proxy %s listen=%s target=%s%s cert=%s", m, c->listen, c->target,
           c->target_tls ? " (mTLS)" : "", c->tls.cert_file ? c->tls.cert_file : "-");
    if (c->mode == PX_MODE_SERVER)
        printf(" policy=%s%s%s rules=%zu", c->policy_file ? c->policy_file : "flags",
               c->service ? " service=" : "", c->service ? c->service : "",
               c->policy ? meshtls_policy_size(c->policy) : 0);
    printf(" workers=%d\n", c->workers);
    return 0;
}

/* The rules a start refuses and a reload refuses alike: required keys, and a policy that
 * builds (the policy file parses, names --service) and allows someone (fail closed). */
static int px_config_usable(const struct px_config *c, struct meshtls_err *err)
{
    int rc = px_config_check_required(c, err);
    if (rc || c->mode != PX_MODE_SERVER)
        return rc;
    struct meshtls_policy *whole = NULL;
    if ((rc = px_policy_build(c, &whole, err)) != 0)
        return rc;
    size_t nrules = meshtls_policy_size(whole);
    meshtls_policy_free(whole);
    if (nrules == 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "no access policy: give --allow-all or at least one "
                               "--allow-cn/-ou/-dns/-uri/-ip/-email/-trust-domain, or --policy "
                               "FILE (fail closed)");
    return 0;
}

/* A configuration read from the sources (argv, environment, the --config file), with the
 * key store its strings point into. */
struct loaded {
    struct px_config c; /* first: px_reread hands out &loaded->c */
    struct meshtls_config *cfg;
};

/* What a reload needs to read the configuration again as the start did. */
struct reread_src {
    int argc; /* the arguments after the mode */
    char **argv;
    const char *mode_name; /* "server" / "client" */
    enum px_mode mode;
};

static void reread_release(void *arg, struct px_config *c)
{
    (void)arg;
    struct loaded *ld = (struct loaded *)c;
    if (!ld)
        return;
    px_config_release(&ld->c);
    meshtls_config_free(ld->cfg);
    free(ld);
}

/* px_reread.load: flags again (they have not changed), the environment again (it cannot
 * change under a running process: read for the same precedence), the --config file again. */
static int reread_load(void *arg, struct px_config **out, struct meshtls_err *err)
{
    const struct reread_src *src = arg;
    const char *config_file = NULL;
    int checking = 0, help = 0, rc;
    struct loaded *ld = calloc(1, sizeof(*ld));
    if (!ld)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory re-reading the configuration");
    const struct meshtls_config_opt opts[] = {{"--config", 1, &config_file, NULL},
                                              {"--check", 0, NULL, &checking},
                                              {"--help", 0, NULL, &help}};
    if ((rc = meshtls_config_new(&ld->cfg)) != 0 || (rc = px_config_register(ld->cfg, err)) != 0 ||
        (rc = meshtls_config_parse_args(ld->cfg, src->argc, src->argv, src->mode_name,
                                        PX_KEY_MODE(src->mode), opts,
                                        sizeof(opts) / sizeof(opts[0]), err)) != 0 ||
        (config_file && (rc = meshtls_config_load_file(ld->cfg, config_file, err)) != 0) ||
        (rc = meshtls_config_load_env(ld->cfg, NULL, err)) != 0 ||
        (rc = px_config_from(ld->cfg, src->mode, &ld->c, err)) != 0 ||
        (rc = px_config_rules(ld->cfg, &ld->c, err)) != 0 ||
        (rc = px_config_usable(&ld->c, err)) != 0) {
        if (rc == MESHTLS_ENOMEM && err && !err->msg[0])
            meshtls_err_set(err, rc, "out of memory re-reading the configuration");
        reread_release(NULL, &ld->c);
        return rc;
    }
    *out = &ld->c;
    return 0;
}

int cmd_proxy(int argc, char **argv)
{
    struct px_config c;
    const char *config_file = NULL;
    struct meshtls_config *cfg = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    int rc, status = 1, help = 0, checking = 0;
    const char *what;

    if (argc >= 2 && !strcmp(argv[1], "router")) /* the bastion: src/cli/cmd_router.c */
        return cmd_proxy_router(argc - 1, argv + 1);
    memset(&c, 0, sizeof(c));
    if (meshtls_config_new(&cfg) != 0 || px_config_register(cfg, &err) != 0) {
        fprintf(stderr, "meshtls proxy: out of memory\n");
        meshtls_config_free(cfg);
        return 1;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        proxy_usage(argc < 2 ? stderr : stdout, cfg, 0);
        meshtls_config_free(cfg);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "server"))
        c.mode = PX_MODE_SERVER;
    else if (!strcmp(argv[1], "client"))
        c.mode = PX_MODE_CLIENT;
    else {
        fprintf(stderr, "meshtls proxy: unknown mode '%s' (server or client)\n", argv[1]);
        meshtls_config_free(cfg);
        return 2;
    }
    what = c.mode == PX_MODE_SERVER ? "proxy server" : "proxy client";
    const struct meshtls_config_opt opts[] = {{"--config", 1, &config_file, NULL},
                                              {"--check", 0, NULL, &checking},
                                              {"--help", 0, NULL, &help}};
    /* flags > environment > YAML file > default: each source keeps its own slot, so the
     * order of the loads does not matter */
    if ((rc = meshtls_config_parse_args(cfg, argc - 2, argv + 2, argv[1], PX_KEY_MODE(c.mode), opts,
                                        sizeof(opts) / sizeof(opts[0]), &err)) != 0) {
        cli_print_err(what, &err, rc);
        fprintf(stderr, "Try 'meshtls %s --help'.\n", what);
        status = 2;
        goto out;
    }
    if (help) {
        proxy_usage(stdout, cfg, c.mode);
        status = 0;
        goto out;
    }
    if ((config_file && (rc = meshtls_config_load_file(cfg, config_file, &err)) != 0) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)) != 0 ||
        (rc = meshtls_config_apply_log(cfg, &err)) != 0 ||
        (rc = px_config_from(cfg, c.mode, &c, &err)) != 0) {
        cli_print_err(what, &err, rc);
        status = 2;
        goto out;
    }
    rc = px_config_rules(cfg, &c, &err);
    if (checking) { /* a bad rule is one error among the others --check reports */
        status = check(&c, rc ? err.msg : NULL);
        goto out;
    }
    if (rc) {
        cli_print_err(what, &err, rc);
        status = 2;
        goto out;
    }
    if ((rc = px_config_usable(&c, &err)) != 0) {
        cli_print_err(what, &err, rc);
        status = 2;
        goto out;
    }
    if (c.mode == PX_MODE_SERVER && c.session_cache_size > 0 &&
        meshtls_session_cache_new(c.session_cache_size, c.session_lifetime_s,
                                  &c.tls.session_cache) != 0) {
        fprintf(stderr, "meshtls proxy server: cannot create the session cache\n");
        goto out;
    }
    if (c.mode == PX_MODE_SERVER && c.verify_cache_size > 0 &&
        meshtls_verify_cache_new(c.verify_cache_size, &c.tls.verify_cache) != 0) {
        fprintf(stderr, "meshtls proxy server: cannot create the verification cache\n");
        goto out;
    }
    px_metrics_scache = c.tls.session_cache;
    px_metrics_vcache = c.tls.verify_cache;
    /* a reload reads the same sources again: the arguments, the environment, the file */
    struct reread_src src = {
        .argc = argc - 2, .argv = argv + 2, .mode_name = argv[1], .mode = c.mode};
    const struct px_reread rr = {
        .load = reread_load, .release = reread_release, .arg = &src, .config_file = config_file};
    c.reread = &rr;
    /* px_run builds the first snapshot (TLS contexts, policy, target) as every reload does */
    if ((rc = px_run(&c, &err)) != 0) {
        cli_print_err(what, &err, rc);
        goto out;
    }
    status = 0;
out:
    meshtls_session_cache_free(c.tls.session_cache);
    meshtls_verify_cache_free(c.tls.verify_cache);
    px_config_release(&c);
    meshtls_config_free(cfg);
    return status;
}
