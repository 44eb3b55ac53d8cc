/*
 * cmd_config.c - `meshtls config`: show the effective configuration and
 * where each value came from (flag > environment > YAML file > default);
 * with --check, validate a role's settings and build its TLS context.
 *
 * The flags are not written here: the command line is parsed by
 * meshtls_config_parse_args() against the key tables, as `meshtls proxy` does, so a key
 * added to a table is a flag here too, with the same checks and messages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "cli.h"
#include "json_utf8.h"
#include "keys.h"
#include "meshtls/meshtls.h"
#include "proxy.h"
#include "router_keys.h"

/* The flags `meshtls config` takes: the library's and the proxy's.  The other commands'
 * keys are shown and listed, but set from their own command lines (a --store here would be
 * ambiguous between router.store, ca.store and ca_serve.store). */
#define CONFIG_MODES (PX_KEY_SERVER | PX_KEY_CLIENT | MESHTLS_MODE_LIBRARY)

static const char *const TYPE_NAMES[] = {"",     "text",      "path",         "bool",    "int",
                                         "enum", "SPIFFE ID", "trust domain", "duration"};

static const char *type_of(const struct meshtls_config_keydef *d)
{
    return d->type > 0 && (size_t)d->type < sizeof(TYPE_NAMES) / sizeof(TYPE_NAMES[0])
               ? TYPE_NAMES[d->type]
               : "?";
}

static void usage(FILE *f, const struct meshtls_config *cfg)
{
    static const char *const MODES[] = {"proxy server", "proxy client"}; /* PX_KEY_* bits */
    fputs("usage: meshtls config [--config FILE] [--role server|client] [--json] [--check]\n"
          "                      [--keys [--json|--markdown]] [FLAG VALUE]...\n"
          "\n"
          "Print every configuration key with its effective value and its source. Precedence:\n"
          "command-line flags, then environment (MESHTLS_*, GRPC_*), then the YAML file, then\n"
          "defaults. --check also checks that the role's required keys are set and builds its\n"
          "TLS context from the files, and, when a proxy.* key is set, checks what\n"
          "`meshtls proxy ROLE --check` checks; it fails (exit 1) with the errors that name\n"
          "what is wrong. --keys lists the keys themselves (type, default, variables, flag);\n"
          "--markdown as the reference table of docs/CONFIG.md.\n"
          "\n"
          "  --config FILE   YAML configuration file\n"
          "  --role ROLE     server (default) or client: the role flags such as --cert set\n"
          "  --json          print a JSON object {key: {value, source}}\n"
          "\n"
          "Flags that set a key (server.X or client.X follows --role):\n",
          f);
    if (cfg)
        meshtls_config_print_flags(cfg, f, NULL, CONFIG_MODES, MODES, 2);
    fputs("\nExit status: 0 fine, 1 configuration error, 2 usage error. See docs/CONFIG.md.\n", f);
}

/* A JSON string of `s` ("" when NULL), valid even when `s` is not UTF-8. */
static json_t *jstr(const char *s)
{
    return mt_json_string(s ? s : "");
}

static void list_keys(const struct meshtls_config *cfg, int json)
{
    json_t *arr = json ? json_array() : NULL;
    for (size_t i = 0; meshtls_config_key(cfg, i); i++) {
        const struct meshtls_config_keydef *d = meshtls_config_key(cfg, i);
        const char *env = meshtls_config_key_env(cfg, d->name);
        if (!json) {
            printf("%-28s %-10s %-8s %-40s %s\n", d->name, type_of(d), d->def ? d->def : "-",
                   *env ? env : "-", d->flag ? d->flag : "-");
            continue;
        }
        json_t *o = json_object();
        json_object_set_new(o, "key", jstr(d->name));
        json_object_set_new(o, "type", jstr(type_of(d)));
        json_object_set_new(o, "default", mt_json_string(d->def)); /* NULL: null */
        json_object_set_new(o, "env", jstr(env));
        json_object_set_new(o, "flag", mt_json_string(d->flag));
        json_object_set_new(o, "help", jstr(d->help));
        json_array_append_new(arr, o);
    }
    if (json)
        mt_json_print(arr, stdout);
}

/* `ms` as the largest unit that divides it: "1ms", "10s", "5m", "24h". */
static void fmt_ms(long ms, char *buf, size_t cap)
{
    if (ms % 3600000 == 0)
        snprintf(buf, cap, "%ldh", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(buf, cap, "%ldm", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, cap, "%lds", ms / 1000);
    else
        snprintf(buf, cap, "%ldms", ms);
}

/* Print `s` in a Markdown table cell ('|' escaped). */
static void md_cell(const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            putchar('\\');
        putchar(*s);
    }
}

/* "Used by" of key `d`: the command and subcommands whose flags (modes) take it. */
static void used_by(const struct meshtls_config_keydef *d, char *buf, size_t cap)
{
    static const struct {
        const char *section, *command;
        unsigned all; /* every mode of the command: name none */
    } CMDS[] = {{"ca.", "ca", CA_KEY_OFFLINE | CA_KEY_TOKEN},
                {"ca_serve.", "ca serve", CA_KEY_SERVE},
                {"connect.", "connect", CLI_KEY_CONNECT},
                {"cert.", "cert", CLI_KEY_INSPECT | CLI_KEY_CHECK | CLI_KEY_VERIFY},
                {"dev.", "dev", CLI_KEY_DEV}};
    if (!strncmp(d->name, "server.", 7) || !strncmp(d->name, "client.", 7)) {
        snprintf(buf, cap, "%s role", !strncmp(d->name, "server.", 7) ? "server" : "client");
        return;
    }
    if (!strncmp(d->name, "proxy.", 6)) {
        snprintf(buf, cap, "%s",
                 d->modes == PX_KEY_SERVER   ? "proxy server"
                 : d->modes == PX_KEY_CLIENT ? "proxy client"
                                             : "proxy");
        return;
    }
    if (!strncmp(d->name, "router.", 7)) {
        snprintf(buf, cap, "%s%s%s", d->modes & RT_KEY_SERVE ? "proxy router" : "",
                 (d->modes & RT_KEY_SERVE) && (d->modes & RT_KEY_DATA) ? ", " : "",
                 d->modes & RT_KEY_DATA ? "router" : "");
        return;
    }
    for (size_t i = 0; i < sizeof(CMDS) / sizeof(CMDS[0]); i++) {
        if (strncmp(d->name, CMDS[i].section, strlen(CMDS[i].section)) != 0)
            continue;
        size_t n = (size_t)snprintf(buf, cap, "%s", CMDS[i].command);
        if ((d->modes & CMDS[i].all) != CMDS[i].all) /* some subcommands: name them */
            for (unsigned b = 0; b < 32 && n < cap; b++)
                if ((d->modes >> b) & 1u)
                    n += (size_t)snprintf(buf + n, cap - n, "%s%s",
                                          n > strlen(CMDS[i].command) ? ", " : " ",
                                          cli_mode_names[b]);
        return;
    }
    snprintf(buf, cap, "all");
}

/*
 * --keys --markdown: the reference table of docs/CONFIG.md, generated from the key tables
 * (tests/integration/test_config_check.py holds the document to it).
 */
static void list_keys_markdown(const struct meshtls_config *cfg)
{
    puts("| key | type | default | environment | flag | used by | meaning |\n"
         "| --- | --- | --- | --- | --- | --- | --- |");
    for (size_t i = 0; meshtls_config_key(cfg, i); i++) {
        const struct meshtls_config_keydef *d = meshtls_config_key(cfg, i);
        char a[32], b[32], type[128];
        if (d->type == MESHTLS_CFG_INT)
            snprintf(type, sizeof(type), "int %ld–%ld", d->min, d->max);
        else if (d->type == MESHTLS_CFG_DURATION) {
            fmt_ms(d->min, a, sizeof(a));
            fmt_ms(d->max, b, sizeof(b));
            snprintf(type, sizeof(type), "duration %s–%s", a, b);
        } else if (d->type == MESHTLS_CFG_ENUM)
            snprintf(type, sizeof(type), "%s", d->choices);
        else
            snprintf(type, sizeof(type), "%s", type_of(d));
        char used[256];
        used_by(d, used, sizeof(used));
        printf("| `%s` | ", d->name);
        md_cell(type);
        printf(" | %s%s%s | ", d->def ? "`" : "–", d->def ? d->def : "", d->def ? "`" : "");
        const char *env = meshtls_config_key_env(cfg, d->name);
        if (!*env) /* an argument key: its flag alone */
            fputs("–", stdout);
        else
            putchar('`');
        for (; *env; env++) /* "A, B" -> `A`, `B` */
            if (*env == ',') {
                fputs("`, `", stdout);
                env++;
            } else
                putchar(*env);
        printf("%s | ", *meshtls_config_key_env(cfg, d->name) ? "`" : "");
        if (d->flag)
            printf("`%s`%s%s%s%s", d->flag, d->flag_sets ? " (sets `" : "",
                   d->flag_sets ? d->flag_sets : "", d->flag_sets ? "`)" : "",
                   d->opts & MESHTLS_KEY_REPEAT ? " (repeatable)" : "");
        else
            putchar('-');
        printf(" | %s%s | ", used, d->modes == MESHTLS_MODE_LIBRARY ? " (not the proxy)" : "");
        md_cell(d->help);
        puts(" |");
    }
}

/* `v` on one line: the items of a repeated flag ('\n' between) joined with ", "; "-" for
 * NULL.  @return `v` itself or `buf`. */
static const char *one_line(const char *v, char *buf, size_t cap)
{
    size_t n = 0;
    if (!v)
        return "-";
    if (!strchr(v, '\n'))
        return v;
    for (; *v && n + 3 < cap; v++)
        if (*v == '\n') {
            buf[n++] = ',';
            buf[n++] = ' ';
        } else
            buf[n++] = *v;
    buf[n] = '\0';
    return buf;
}

static void show(const struct meshtls_config *cfg, int json)
{
    char line[4200];
    json_t *all = json ? json_object() : NULL;
    for (size_t i = 0; meshtls_config_key(cfg, i); i++) {
        const char *k = meshtls_config_key(cfg, i)->name, *src = NULL;
        char safe[4200];
        /* a password (or a URL's) is never printed */
        const char *v = meshtls_config_shown(cfg, k, safe, sizeof(safe), &src);
        if (!json) {
            printf("%-28s %-40s %s\n", k, one_line(v, line, sizeof(line)), src);
            continue;
        }
        json_t *o = json_object();
        json_object_set_new(o, "value", mt_json_string(v)); /* NULL: null */
        json_object_set_new(o, "source", jstr(src));
        json_object_set_new(all, k, o);
    }
    if (json)
        mt_json_print(all, stdout);
}

/* Does any source set a proxy.* key (the configuration is a proxy's)? */
static int uses_proxy(const struct meshtls_config *cfg)
{
    for (size_t i = 0; meshtls_config_key(cfg, i); i++) {
        const char *k = meshtls_config_key(cfg, i)->name, *src = NULL;
        if (strncmp(k, "proxy.", 6) == 0 && meshtls_config_get(cfg, k, &src) && src &&
            strcmp(src, "default") != 0)
            return 1;
    }
    return 0;
}

/*
 * --check of a configuration with a proxy: section: what `meshtls proxy ROLE --check`
 * checks (the role is the mode), from the same code.  @return 0, or 1 after printing each
 * error found.
 */
static int check_proxy(const struct meshtls_config *cfg, const char *role)
{
    struct px_config c;
    struct px_check_report rep;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    enum px_mode mode = !strcmp(role, "server") ? PX_MODE_SERVER : PX_MODE_CLIENT;
    int rc = px_config_from(cfg, mode, &c, &err);
    if (rc) {
        cli_print_err("config", &err, rc);
        return 1;
    }
    memset(&rep, 0, sizeof(rep));
    if ((rc = px_config_rules(cfg, &c, &err)) != 0) {
        snprintf(rep.msg[PX_CHECK_POLICY], sizeof(rep.msg[PX_CHECK_POLICY]), "%s", err.msg);
        rep.nerrors = 1;
    }
    if (px_config_check(&c, &rep) != 0) {
        for (int i = 0; i < PX_CHECK_N; i++)
            if (rep.msg[i][0])
                fprintf(stderr, "meshtls config: proxy %s: %s: %s\n", role,
                        px_check_class_name((enum px_check_class)i), rep.msg[i]);
        rc = 1;
    }
    px_config_release(&c);
    return rc;
}

int cmd_config(int argc, char **argv)
{
    const char *file = NULL, *role = "server";
    int json = 0, check = 0, keys = 0, markdown = 0, help = 0, rc = 0, status = 2;
    struct meshtls_config *cfg = NULL, *scratch = NULL;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const struct meshtls_config_opt opts[] = {
        {"--config", 1, &file, NULL}, {"--role", 1, &role, NULL},
        {"--json", 0, NULL, &json},   {"--check", 0, NULL, &check},
        {"--keys", 0, NULL, &keys},   {"--markdown", 0, NULL, &markdown},
        {"--help", 0, NULL, &help}};
    const size_t nopts = sizeof(opts) / sizeof(opts[0]);

    /* every command's table: the keys shown, listed and documented are all of them */
    if (meshtls_config_new(&cfg) != 0 || cli_config_register(cfg, CLI_TABLE_ALL, NULL) != 0 ||
        meshtls_config_new(&scratch) != 0 ||
        cli_config_register(scratch, CLI_TABLE_ALL, NULL) != 0) {
        fprintf(stderr, "meshtls config: out of memory\n");
        status = 1;
        goto out;
    }
    /* Every flag of the key tables is ours (modes 0: the proxy's too).  --role decides which
     * role's key a shared flag such as --cert sets, so a first pass over a scratch copy only
     * finds --role; the second sets the keys (and reports what the first may have met). */
    (void)meshtls_config_parse_args(scratch, argc - 1, argv + 1, NULL, CONFIG_MODES, opts, nopts,
                                    NULL);
    if (strcmp(role, "server") && strcmp(role, "client")) {
        fprintf(stderr, "meshtls config: --role '%s': expected server or client\n", role);
        goto out;
    }
    json = check = keys = markdown = help = 0;
    if ((rc = meshtls_config_parse_args(cfg, argc - 1, argv + 1, role, CONFIG_MODES, opts, nopts,
                                        &err))) {
        cli_print_err("config", &err, rc);
        rc = 0;
        if (err.code == MESHTLS_EPARSE) { /* a usage error; a refused value is exit 1 */
            fputs("Try 'meshtls config --help'.\n", stderr);
            goto out;
        }
        status = 1;
        goto out;
    }
    if (help) {
        usage(stdout, cfg);
        status = 0;
        goto out;
    }
    if (keys || markdown) {
        if (markdown)
            list_keys_markdown(cfg);
        else
            list_keys(cfg, json);
        status = 0;
        goto out;
    }
    status = 1;
    if ((file && (rc = meshtls_config_load_file(cfg, file, &err))) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)))
        goto out;
    show(cfg, json);
    if (check) {
        struct meshtls_tls_opts o;
        SSL_CTX *ctx = NULL;
        if ((rc = meshtls_config_tls_opts(cfg, role, &o, &err)))
            goto out;
        rc = !strcmp(role, "server") ? meshtls_tls_server_ctx_new(&o, &ctx, &err)
                                     : meshtls_tls_client_ctx_new(&o, &ctx, &err);
        SSL_CTX_free(ctx);
        if (rc)
            goto out;
        if (uses_proxy(cfg) && (status = check_proxy(cfg, role)) != 0)
            goto out;
        fprintf(stderr, "meshtls config: %s configuration OK\n", role);
    }
    status = 0;
out:
    if (rc)
        cli_print_err("config", &err, rc);
    meshtls_config_free(scratch);
    meshtls_config_free(cfg);
    return status;
}
