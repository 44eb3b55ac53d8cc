/*
 * config.c - settings from flags, environment and YAML (see meshtls/config.h,
 * docs/CONFIG.md).
 *
 * Keys come from static tables (config_keys.c, plus any a consumer registers).
 * Each key keeps one slot per source; the effective value is the slot of the
 * highest source, so precedence never depends on the order of the calls.
 *
 * Loading is all-or-nothing: a file or an environment is first parsed into a
 * per-key staging slot and committed only when all of it is valid, so a
 * failed load leaves the configuration as it was.
 *
 * The YAML file is read with libyaml's event parser over a fixed shape
 * (section -> key -> scalar).  Anything deeper is refused at the first event
 * that does not fit, so nesting is bounded by construction and libyaml never
 * has to build a tree.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meshtls/config.h"
#include "parse.h"
#include "meshtls/log.h"
#include "meshtls/spiffe.h"
#include "meshtls/x509.h"
#include "yamlev.h"

extern char **environ;

/* The built-in table (config_keys.c). */
extern const struct meshtls_config_keydef mt_config_core_keys[];
extern const size_t mt_config_core_nkeys;

#define CONFIG_FILE_MAX (1024 * 1024) /* bytes of YAML */
#define VALUE_MAX 4096                /* bytes of one value */
#define NAME_MAX_LEN 63               /* bytes of a key name */
#define KEYS_MAX 1024                 /* keys in one configuration */
#define SECTIONS_MAX 64               /* distinct sections in one file */
#define ENV_LEN (sizeof("MESHTLS_") + NAME_MAX_LEN)

struct slot {
    char *value;   /* owned, or NULL when unset */
    char *label;   /* owned: "--cert", "GRPC_SERVER_CERT_PATH", "app.yaml:3" */
    int from_peer; /* staged from the peer_tls block (a role's own key overrides it) */
};

struct kent {
    const struct meshtls_config_keydef *d; /* borrowed row of a static table */
    char env[ENV_LEN];                     /* canonical MESHTLS_* name */
    char envs[2 * ENV_LEN + 4];            /* "MESHTLS_X, ALIAS" for messages */
    struct slot v[4];                      /* [enum meshtls_config_source]; DEFAULT unused */
    struct slot stage;                     /* a load in progress */
};

struct meshtls_config {
    struct kent **k; /* owned entries, registration order */
    size_t n, cap;
    const struct meshtls_config_flag_alias **fa; /* owned array of borrowed rows */
    size_t nfa;
};

/* ---- small helpers ------------------------------------------------------------ */

static void slot_clear(struct slot *s)
{
    free(s->value);
    s->value = NULL;
    free(s->label);
    s->label = NULL;
    s->from_peer = 0;
}

static struct kent *find(const struct meshtls_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->k[i]->d->name, name))
            return cfg->k[i];
    return NULL;
}

/* Length of the section part of "section.key". */
static size_t sec_len(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

static int in_section(const struct kent *e, const char *sec)
{
    size_t l = sec_len(e->d->name);
    return strlen(sec) == l && !strncmp(e->d->name, sec, l);
}

/* Levenshtein distance of two short names (99 when too long to matter). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[NAME_MAX_LEN + 2];
    if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j], best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* A near miss is at most 2 edits away, and keeps some of the name. */
static int near(const char *a, const char *b)
{
    size_t d = distance(a, b);
    return d <= 2 && d < strlen(a);
}

/*
 * Write " (did you mean 'X'?)" into `buf` for an unknown `key` of section
 * `sec` (`key` NULL: `sec` is an unknown section), or "" when nothing is close.
 */
static void suggest(const struct meshtls_config *cfg, const char *sec, const char *key, char *buf,
                    size_t cap)
{
    buf[0] = '\0';
    if (!key) {
        if (near(sec, "peer_tls")) {
            snprintf(buf, cap, " (did you mean 'peer_tls'?)");
            return;
        }
        for (size_t i = 0; i < cfg->n; i++) {
            char s[NAME_MAX_LEN + 1];
            snprintf(s, sizeof(s), "%.*s", (int)sec_len(cfg->k[i]->d->name), cfg->k[i]->d->name);
            if (near(sec, s)) {
                snprintf(buf, cap, " (did you mean '%s'?)", s);
                return;
            }
        }
        return;
    }
    for (size_t i = 0; i < cfg->n; i++) /* a typo in this section */
        if (in_section(cfg->k[i], sec) && near(key, cfg->k[i]->d->name + strlen(sec) + 1)) {
            snprintf(buf, cap, " (did you mean '%s'?)", cfg->k[i]->d->name);
            return;
        }
    for (size_t i = 0; i < cfg->n; i++) /* the right key in another section */
        if (!strcmp(key, cfg->k[i]->d->name + sec_len(cfg->k[i]->d->name) + 1)) {
            snprintf(buf, cap, " (did you mean '%s'?)", cfg->k[i]->d->name);
            return;
        }
}

static int parse_bool(const char *v, int *out)
{
    static const char *const T[] = {"true", "1", "yes", "on"};
    static const char *const F[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        if (!strcasecmp(v, T[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, F[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* A whole decimal number: optional '-', digits only, no overflow. */
static int parse_long(const char *v, long *out)
{
    int64_t x;
    if (mt_parse_i64(v, LONG_MIN, LONG_MAX, &x) != 0)
        return -1;
    *out = (long)x;
    return 0;
}

/* "500ms", "10s", "5m", "1h", or "10" (seconds), into milliseconds: parse.h's parser, so a
 * duration means the same in a flag, a variable, a file and the policy store. */
static int parse_duration(const char *v, long *ms)
{
    int64_t x;
    if (!strcmp(v, "off")) { /* "--cache-ttl off": 0, which a key with min > 0 refuses */
        *ms = 0;
        return 0;
    }
    if (mt_parse_duration_ms(v, LONG_MAX, &x) != 0)
        return -1;
    *ms = (long)x;
    return 0;
}

/* "a file path", "true or false", ...: what a value of key `d` must look like. */
static const char *type_name(const struct meshtls_config_keydef *d)
{
    switch (d->type) {
    case MESHTLS_CFG_PATH: return "a file path";
    case MESHTLS_CFG_BOOL: return "true or false";
    case MESHTLS_CFG_INT: return "a whole number";
    case MESHTLS_CFG_ENUM: return d->choices;
    case MESHTLS_CFG_SPIFFE_ID: return "a SPIFFE ID";
    case MESHTLS_CFG_TRUST_DOMAIN: return "a trust domain";
    case MESHTLS_CFG_DURATION: return "a duration such as 500ms, 10s, 5m or 1h";
    default: return "text";
    }
}

/* Check `v` against key `d`; `where` ("FILE:LINE", variable, flag) starts messages. */
static int validate(const struct meshtls_config_keydef *d, const char *v, const char *where,
                    struct meshtls_err *err)
{
    size_t n = strnlen(v, VALUE_MAX + 1);
    long x;
    if (n > VALUE_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: the value of %s is longer than %d bytes",
                               where, d->name, VALUE_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: the value of %s contains a control character", where,
                                   d->name);
    if (n == 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s is empty (expected %s)", where, d->name,
                               type_name(d));
    switch (d->type) {
    case MESHTLS_CFG_BOOL: {
        int b;
        if (parse_bool(v, &b))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%.64s' is not a boolean for %s (use true or false)", where,
                                   v, d->name);
        return 0;
    }
    case MESHTLS_CFG_INT:
        if (parse_long(v, &x) || x < d->min || x > d->max)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%.64s' for %s: expected a whole number from %ld to %ld",
                                   where, v, d->name, d->min, d->max);
        return 0;
    case MESHTLS_CFG_DURATION:
        if (parse_duration(v, &x) || x < d->min || x > d->max)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "%s: '%.64s' for %s: expected a duration such as 500ms, 10s, "
                                   "5m or 1h, from %ldms to %lds",
                                   where, v, d->name, d->min, d->max / 1000);
        return 0;
    case MESHTLS_CFG_ENUM:
        for (const char *p = d->choices; p && *p;) {
            const char *bar = strchr(p, '|');
            size_t l = bar ? (size_t)(bar - p) : strlen(p);
            if (l == n && !strncmp(p, v, l))
                return 0;
            p = bar ? bar + 1 : NULL;
        }
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: '%.64s' for %s: expected one of %s", where,
                               v, d->name, d->choices);
    case MESHTLS_CFG_SPIFFE_ID: {
        struct meshtls_spiffe_id id;
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (meshtls_spiffe_parse(v, n, &id, &e2))
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s: %s", where, d->name, e2.msg);
        return 0;
    }
    case MESHTLS_CFG_TRUST_DOMAIN: {
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (meshtls_trust_domain_validate(v, &e2))
            return meshtls_err_set(err, MESHTLS_EINVAL, "%s: %s: %s", where, d->name, e2.msg);
        return 0;
    }
    default: return 0;
    }
}

/* Check `v` for `e`, then copy it and `label` into slot `s`. */
static int slot_put(struct slot *s, const struct kent *e, const char *v, const char *label,
                    int from_peer, struct meshtls_err *err)
{
    int rc = validate(e->d, v, label, err);
    if (rc)
        return rc;
    char *nv = strdup(v), *nl = strdup(label);
    if (!nv || !nl) {
        free(nv);
        free(nl);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    slot_clear(s);
    s->value = nv;
    s->label = nl;
    s->from_peer = from_peer;
    return 0;
}

/* End a load: move staged values into source `src` (ok) or drop them. */
static void stage_end(struct meshtls_config *cfg, int src, int ok)
{
    for (size_t i = 0; i < cfg->n; i++) {
        struct kent *e = cfg->k[i];
        if (ok && e->stage.value) {
            slot_clear(&e->v[src]);
            e->v[src] = e->stage;
            e->v[src].from_peer = 0;
            memset(&e->stage, 0, sizeof(e->stage));
        } else
            slot_clear(&e->stage);
    }
}

/* ---- keys ------------------------------------------------------------------------ */

static int name_ok(const char *name)
{
    size_t n = strnlen(name, NAME_MAX_LEN + 1), dots = 0;
    if (n == 0 || n > NAME_MAX_LEN || name[0] == '.' || name[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '.')
            dots++;
        else if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
                   name[i] == '_'))
            return 0;
    }
    return dots == 1 && strncmp(name, "peer_tls.", 9) != 0;
}

/* Is environment variable `var` already used by a key of `cfg` (or of `defs[0..n)`)? */
static int env_taken(const struct meshtls_config *cfg, const struct kent *news, size_t n,
                     const char *var)
{
    for (size_t i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->k[i]->env, var) ||
            (cfg->k[i]->d->alias && !strcmp(cfg->k[i]->d->alias, var)))
            return 1;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(news[i].env, var) || (news[i].d->alias && !strcmp(news[i].d->alias, var)))
            return 1;
    return 0;
}

/* Check one table row; `e` gets its derived names. */
static int row_check(const struct meshtls_config *cfg, struct kent *news, size_t i,
                     struct meshtls_err *err)
{
    const struct meshtls_config_keydef *d = news[i].d;
    struct kent *e = &news[i];
    if (!d->name || !name_ok(d->name))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "config key '%s': expected section.key in [a-z0-9_] (at most %d "
                               "bytes, section not peer_tls)",
                               d->name ? d->name : "(null)", NAME_MAX_LEN);
    if (d->type < MESHTLS_CFG_STR || d->type > MESHTLS_CFG_DURATION)
        return meshtls_err_set(err, MESHTLS_EINVAL, "config key '%s': unknown type %d", d->name,
                               d->type);
    if (d->type == MESHTLS_CFG_ENUM && (!d->choices || !*d->choices))
        return meshtls_err_set(err, MESHTLS_EINVAL, "config key '%s': an enum needs choices",
                               d->name);
    if ((d->type == MESHTLS_CFG_INT || d->type == MESHTLS_CFG_DURATION) && d->min > d->max)
        return meshtls_err_set(err, MESHTLS_EINVAL, "config key '%s': empty range", d->name);
    if (d->flag && (strncmp(d->flag, "--", 2) != 0 || !d->flag[2]))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "config key '%s': flag '%s' must start "
                               "with --",
                               d->name, d->flag);
    if ((d->opts & MESHTLS_KEY_ARG) && (!d->flag || d->alias))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "config key '%s': an argument key needs a flag and no alias",
                               d->name);
    if ((d->opts & MESHTLS_KEY_REPEAT) && (d->flag_sets || !d->flag || d->def))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "config key '%s': a repeatable flag takes a value and the key "
                               "has no default",
                               d->name);
    size_t j = 0;
    j += (size_t)snprintf(e->env, sizeof(e->env), "MESHTLS_");
    for (const char *p = d->name; *p; p++)
        e->env[j++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    e->env[j] = '\0';
    if (d->opts & MESHTLS_KEY_ARG) /* set by its flag alone: no variable to name */
        e->envs[0] = '\0';
    else
        snprintf(e->envs, sizeof(e->envs), "%s%s%s", e->env, d->alias ? ", " : "",
                 d->alias ? d->alias : "");
    if (find(cfg, d->name))
        return meshtls_err_set(err, MESHTLS_EEXIST, "config key '%s' is already registered",
                               d->name);
    for (size_t k = 0; k < i; k++)
        if (!strcmp(news[k].d->name, d->name))
            return meshtls_err_set(err, MESHTLS_EEXIST, "config key '%s' is listed twice", d->name);
    if (env_taken(cfg, news, i, e->env) || (d->alias && env_taken(cfg, news, i, d->alias)))
        return meshtls_err_set(err, MESHTLS_EEXIST,
                               "config key '%s': its environment variable is already used",
                               d->name);
    int rc;
    if ((d->def && (rc = validate(d, d->def, "default", err))) ||
        (d->flag_sets && (rc = validate(d, d->flag_sets, d->flag ? d->flag : "flag", err))))
        return rc;
    return 0;
}

int meshtls_config_add_keys(struct meshtls_config *cfg, const struct meshtls_config_keydef *defs,
                            size_t n, struct meshtls_err *err)
{
    struct kent *news = NULL;
    int rc = 0;
    if (n == 0)
        return 0;
    if (!defs || n > KEYS_MAX - cfg->n)
        return meshtls_err_set(err, MESHTLS_EINVAL, "too many configuration keys (at most %d)",
                               KEYS_MAX);
    news = calloc(n, sizeof(*news));
    if (!news) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        news[i].d = &defs[i];
        if ((rc = row_check(cfg, news, i, err)))
            goto out;
    }
    if (cfg->n + n > cfg->cap) {
        size_t cap = cfg->n + n + 16;
        struct kent **k = realloc(cfg->k, cap * sizeof(*k));
        if (!k) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
            goto out;
        }
        cfg->k = k;
        cfg->cap = cap;
    }
    size_t done = 0;
    for (; done < n; done++) {
        struct kent *e = malloc(sizeof(*e));
        if (!e)
            break;
        *e = news[done];
        cfg->k[cfg->n + done] = e;
    }
    if (done < n) { /* undo: all or nothing */
        while (done > 0)
            free(cfg->k[cfg->n + --done]);
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    cfg->n += n;
out:
    free(news);
    return rc;
}

int meshtls_config_new(struct meshtls_config **out)
{
    struct meshtls_config *c = calloc(1, sizeof(*c));
    if (!c)
        return MESHTLS_ENOMEM;
    if (meshtls_config_add_keys(c, mt_config_core_keys, mt_config_core_nkeys, NULL) != 0) {
        meshtls_config_free(c); /* a table row is wrong (a test catches it) or no memory */
        return MESHTLS_ENOMEM;
    }
    *out = c;
    return 0;
}

void meshtls_config_free(struct meshtls_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++) {
        for (int s = 0; s < 4; s++)
            slot_clear(&cfg->k[i]->v[s]);
        slot_clear(&cfg->k[i]->stage);
        free(cfg->k[i]);
    }
    free(cfg->k);
    free(cfg->fa);
    free(cfg);
}

size_t meshtls_config_key_count(const struct meshtls_config *cfg)
{
    return cfg->n;
}

const struct meshtls_config_keydef *meshtls_config_key(const struct meshtls_config *cfg, size_t i)
{
    return i < cfg->n ? cfg->k[i]->d : NULL;
}

const char *meshtls_config_key_env(const struct meshtls_config *cfg, const char *key)
{
    const struct kent *e = find(cfg, key);
    return e ? e->envs : NULL;
}

/* ---- values ------------------------------------------------------------------------ */

/* A repeatable key's flag given again: check `v` as one item and add it ('\n' between). */
static int slot_append(struct slot *s, const struct kent *e, const char *v, const char *label,
                       struct meshtls_err *err)
{
    int rc = validate(e->d, v, label, err);
    if (rc)
        return rc;
    size_t a = strlen(s->value), b = strlen(v);
    if (a + 1 + b > VALUE_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: the values of %s are longer than %d bytes",
                               label, e->d->name, VALUE_MAX);
    char *nv = malloc(a + 1 + b + 1);
    if (!nv)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    memcpy(nv, s->value, a);
    nv[a] = '\n';
    memcpy(nv + a + 1, v, b + 1);
    free(s->value);
    s->value = nv;
    return 0;
}

int meshtls_config_set(struct meshtls_config *cfg, const char *key, const char *value,
                       const char *flag, struct meshtls_err *err)
{
    struct kent *e = find(cfg, key);
    if (!e)
        return meshtls_err_set(err, MESHTLS_EINVAL, "unknown configuration key '%.64s'", key);
    const char *label = flag ? flag : e->d->flag ? e->d->flag : e->d->name;
    if ((e->d->opts & MESHTLS_KEY_REPEAT) && e->v[MESHTLS_SRC_FLAG].value)
        return slot_append(&e->v[MESHTLS_SRC_FLAG], e, value, label, err);
    return slot_put(&e->v[MESHTLS_SRC_FLAG], e, value, label, 0, err);
}

/* ---- command lines --------------------------------------------------------------- */

/* The alias of key `d`'s flag, or NULL. */
static const char *alias_of(const struct meshtls_config *cfg, const struct meshtls_config_keydef *d)
{
    for (size_t i = 0; i < cfg->nfa; i++)
        if (!strcmp(cfg->fa[i]->key, d->name))
            return cfg->fa[i]->flag;
    return NULL;
}

/* Is `name` key `d`'s flag or its alias? */
static int flag_is(const struct meshtls_config *cfg, const struct meshtls_config_keydef *d,
                   const char *name)
{
    if (d->flag && !strcmp(d->flag, name))
        return 1;
    for (size_t i = 0; i < cfg->nfa; i++)
        if (!strcmp(cfg->fa[i]->flag, name) && !strcmp(cfg->fa[i]->key, d->name))
            return 1;
    return 0;
}

int meshtls_config_add_flag_aliases(struct meshtls_config *cfg,
                                    const struct meshtls_config_flag_alias *v, size_t n,
                                    struct meshtls_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const struct kent *e = v[i].key ? find(cfg, v[i].key) : NULL;
        if (!e || !e->d->flag || !v[i].flag || strncmp(v[i].flag, "--", 2) != 0 || !v[i].flag[2])
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "flag alias '%s' for key '%s': expected --name and a key with "
                                   "a flag",
                                   v[i].flag ? v[i].flag : "(null)", v[i].key ? v[i].key : "");
    }
    const struct meshtls_config_flag_alias **fa =
        realloc(cfg->fa, (cfg->nfa + n + 1) * sizeof(*fa));
    if (!fa)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    cfg->fa = fa;
    for (size_t i = 0; i < n; i++)
        cfg->fa[cfg->nfa++] = &v[i];
    return 0;
}

/* Does key `d`'s flag apply to a command of `role` and `modes`? */
static int flag_applies(const struct meshtls_config_keydef *d, const char *role, unsigned modes)
{
    size_t sl = sec_len(d->name);
    int role_sec = (sl == 6 && (!strncmp(d->name, "server", 6) || !strncmp(d->name, "client", 6)));
    int mode_ok = d->modes == 0 || modes == 0 || (d->modes & modes) != 0;
    if (role_sec) /* role NULL: --help of every mode lists both roles' flags */
        return mode_ok && (!role || (strlen(role) == 6 && !strncmp(d->name, role, 6)));
    return mode_ok;
}

/* Store positional argument `a` in `pos`, or refuse it (none expected, or one too many). */
static int positional(const char *a, const char **pos, size_t maxpos, size_t *npos,
                      struct meshtls_err *err)
{
    if (*npos >= maxpos)
        return meshtls_err_set(err, MESHTLS_EPARSE, "unexpected argument '%.200s'", a);
    pos[(*npos)++] = a;
    return 0;
}

int meshtls_config_parse_args(struct meshtls_config *cfg, int argc, char *const *argv,
                              const char *role, unsigned modes,
                              const struct meshtls_config_opt *opts, size_t nopts,
                              struct meshtls_err *err)
{
    return meshtls_config_parse_cmdline(cfg, argc, argv, role, modes, opts, nopts, NULL, 0, NULL,
                                        err);
}

int meshtls_config_parse_cmdline(struct meshtls_config *cfg, int argc, char *const *argv,
                                 const char *role, unsigned modes,
                                 const struct meshtls_config_opt *opts, size_t nopts,
                                 const char **pos, size_t maxpos, size_t *npos,
                                 struct meshtls_err *err)
{
    unsigned char *given = calloc(cfg->n + 1, 1); /* MESHTLS_KEY_ONCE */
    size_t np = 0;
    int rc = 0;
    if (!given)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    if (!pos)
        maxpos = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i], *eq, *val = NULL;
        char name[NAME_MAX_LEN + 3];
        if (!strcmp(a, "--")) { /* the rest is positional, even "--x" */
            for (int j = i + 1; j < argc && rc == 0; j++)
                rc = positional(argv[j], pos, maxpos, &np, err);
            break;
        }
        if (!strcmp(a, "-") || a[0] != '-') {
            rc = positional(a, pos, maxpos, &np, err);
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            rc = meshtls_err_set(err, MESHTLS_EPARSE,
                                 "unexpected argument '%.200s' (options are written --name)", a);
            break;
        }
        eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof(name)) {
            rc = meshtls_err_set(err, MESHTLS_EPARSE, "unknown option '%.64s...'", a);
            break;
        }
        memcpy(name, a, nl);
        name[nl] = '\0';
        if (eq)
            val = eq + 1;
        /* the command's own options first */
        size_t j;
        for (j = 0; j < nopts && strcmp(opts[j].flag, name); j++)
            ;
        if (j < nopts) {
            if (opts[j].has_arg && !val && i + 1 >= argc) {
                rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s needs a value", name);
                break;
            }
            if (!opts[j].has_arg && val) {
                rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s takes no value", name);
                break;
            }
            if (opts[j].has_arg && !val)
                val = argv[++i];
            if (opts[j].value)
                *opts[j].value = val;
            if (opts[j].count)
                (*opts[j].count)++;
            continue;
        }
        /* then the keys: the one that applies here, else say whose flag it is */
        struct kent *e = NULL, *other = NULL;
        size_t ki = 0;
        for (size_t k = 0; k < cfg->n && !e; k++) {
            const struct meshtls_config_keydef *d = cfg->k[k]->d;
            if (!flag_is(cfg, d, name))
                continue;
            if (flag_applies(d, role, modes)) {
                e = cfg->k[k];
                ki = k;
            } else if (!other)
                other = cfg->k[k];
        }
        if (!e && other) {
            rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s does not apply to this mode (it sets %s)",
                                 name, other->d->name);
            break;
        }
        if (!e) {
            const char *best = NULL;
            size_t bd = 99;
            for (size_t k = 0; k < cfg->n; k++) {
                const struct meshtls_config_keydef *d = cfg->k[k]->d;
                if (d->flag && flag_applies(d, role, modes) && distance(name, d->flag) < bd) {
                    bd = distance(name, d->flag);
                    best = d->flag;
                }
            }
            for (size_t k = 0; k < nopts; k++)
                if (distance(name, opts[k].flag) < bd) {
                    bd = distance(name, opts[k].flag);
                    best = opts[k].flag;
                }
            rc = meshtls_err_set(err, MESHTLS_EPARSE, "unknown option '%.64s'%s%s%s", name,
                                 best && bd <= 2 ? " (did you mean '" : "",
                                 best && bd <= 2 ? best : "", best && bd <= 2 ? "'?)" : "");
            break;
        }
        const struct meshtls_config_keydef *d = e->d;
        if (d->flag_sets && val) {
            rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s takes no value (it sets %s to %s)", name,
                                 d->name, d->flag_sets);
            break;
        }
        if (!d->flag_sets && !val) {
            if (i + 1 >= argc) {
                rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s needs a value (%s)", name, d->help);
                break;
            }
            val = argv[++i];
        }
        if ((d->opts & MESHTLS_KEY_ONCE) && given[ki]) {
            rc = meshtls_err_set(err, MESHTLS_EPARSE, "%s is given twice: give one %s", name,
                                 d->help);
            break;
        }
        given[ki] = 1;
        rc = meshtls_config_set(cfg, d->name, d->flag_sets ? d->flag_sets : val, name, err);
    }
    free(given);
    if (npos)
        *npos = np;
    return rc;
}

/* The value's name in --help: the row's metavar, else one from the type. */
static const char *metavar_of(const struct meshtls_config_keydef *d)
{
    if (d->flag_sets)
        return "";
    if (d->metavar)
        return d->metavar;
    switch (d->type) {
    case MESHTLS_CFG_PATH: return "FILE";
    case MESHTLS_CFG_INT: return "N";
    case MESHTLS_CFG_DURATION: return "D";
    case MESHTLS_CFG_ENUM: return d->choices;
    case MESHTLS_CFG_SPIFFE_ID: return "URI";
    case MESHTLS_CFG_TRUST_DOMAIN: return "TD";
    case MESHTLS_CFG_BOOL: return "BOOL";
    default: return "VALUE";
    }
}

/* The heading key `d` is listed under. */
static void group_of(const struct meshtls_config_keydef *d, char *buf, size_t cap)
{
    if (d->group)
        snprintf(buf, cap, "%s", d->group);
    else
        snprintf(buf, cap, "%.*s", (int)sec_len(d->name), d->name);
}

/* "  LHS   TEXT" with TEXT word-wrapped to 80 columns under column 33. */
static void print_wrapped(FILE *f, const char *lhs, const char *text)
{
    enum { COL = 33, WIDTH = 80 };
    int col = fprintf(f, "  %s", lhs);
    if (col > COL - 1) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", COL - col, "");
    col = COL;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        size_t w = strcspn(p, " ");
        if (!w)
            break;
        if (col > COL && col + 1 + (int)w > WIDTH) {
            fprintf(f, "\n%*s", COL, "");
            col = COL;
        }
        col += fprintf(f, "%s%.*s", col > COL ? " " : "", (int)w, p);
        p += w;
    }
    fputc('\n', f);
}

void meshtls_config_print_flags(const struct meshtls_config *cfg, FILE *f, const char *role,
                                unsigned modes, const char *const *mode_names, size_t nmode_names)
{
    char g[64], g2[64];
    unsigned char *done = calloc(cfg->n + 1, 1);
    if (!done)
        return;
    for (size_t i = 0; i < cfg->n; i++) { /* each group, in order of first appearance */
        const struct meshtls_config_keydef *d = cfg->k[i]->d;
        if (done[i] || !d->flag || !flag_applies(d, role, modes))
            continue;
        group_of(d, g, sizeof(g));
        fprintf(f, "%s:\n", g);
        for (size_t j = i; j < cfg->n; j++) {
            const struct meshtls_config_keydef *e = cfg->k[j]->d;
            if (done[j] || !e->flag || !flag_applies(e, role, modes))
                continue;
            group_of(e, g2, sizeof(g2));
            if (strcmp(g, g2) != 0)
                continue;
            /* the same flag for both roles (--cert): one line; tag a flag of one role/mode */
            int srv = 0, cli = 0;
            unsigned bits = 0;
            for (size_t k = j; k < cfg->n; k++) {
                const struct meshtls_config_keydef *x = cfg->k[k]->d;
                if (!x->flag || strcmp(x->flag, e->flag) || !flag_applies(x, role, modes))
                    continue;
                done[k] = 1;
                srv |= !strncmp(x->name, "server.", 7);
                cli |= !strncmp(x->name, "client.", 7);
                bits |= x->modes;
            }
            char tag[64] = "";
            if (!role && srv != cli)
                snprintf(tag, sizeof(tag), " [%s]", srv ? "server" : "client");
            else if (bits && mode_names && (modes == 0 || (bits & modes) != modes)) {
                size_t tl = 0;
                unsigned shown = modes ? bits & modes : bits;
                for (size_t b = 0; b < nmode_names && b < 32 && tl + 2 < sizeof(tag); b++)
                    if ((shown >> b) & 1u)
                        tl += (size_t)snprintf(tag + tl, sizeof(tag) - tl, "%s%s", tl ? "|" : " [",
                                               mode_names[b]);
                if (tl && tl + 2 < sizeof(tag))
                    snprintf(tag + tl, sizeof(tag) - tl, "]");
            }
            char lhs[80], text[1024];
            const char *mv = metavar_of(e);
            const char *al = alias_of(cfg, e);
            snprintf(lhs, sizeof(lhs), "%s%s%s%s%s", e->flag, al ? ", " : "", al ? al : "",
                     *mv ? " " : "", mv);
            snprintf(text, sizeof(text), "%s%s%s%s%s%s%s",
                     e->flag_sets && !strcmp(e->flag_sets, "false") ? "turns off: " : "",
                     e->help ? e->help : "", tag, e->def && !e->flag_sets ? " (default " : "",
                     e->def && !e->flag_sets ? e->def : "", e->def && !e->flag_sets ? ")" : "",
                     e->opts & MESHTLS_KEY_REPEAT ? " (repeatable)" : "");
            print_wrapped(f, lhs, text);
        }
    }
    free(done);
}

int meshtls_config_apply_log(const struct meshtls_config *cfg, struct meshtls_err *err)
{
    const char *src = NULL, *lv = meshtls_config_get(cfg, "log.level", &src);
    int lvl = lv ? meshtls_log_level_parse(lv) : MESHTLS_LOG_INFO;
    if (lvl < 0)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s: '%.64s' for log.level: expected debug, info, warn or error",
                               src, lv);
    const char *fv = meshtls_config_get(cfg, "log.format", &src);
    if (fv && strcmp(fv, "text") && strcmp(fv, "json"))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "%s: '%.64s' for log.format: expected text or json", src, fv);
    meshtls_log_set_level(lvl);
    meshtls_log_set_json(fv && !strcmp(fv, "json"));
    return 0;
}

const char *meshtls_config_get(const struct meshtls_config *cfg, const char *key,
                               const char **source)
{
    const struct kent *e = find(cfg, key);
    if (!e)
        return NULL;
    for (int s = MESHTLS_SRC_FLAG; s >= MESHTLS_SRC_FILE; s--)
        if (e->v[s].value) {
            if (source)
                *source = e->v[s].label;
            return e->v[s].value;
        }
    if (source)
        *source = e->d->def ? "default" : "unset";
    return e->d->def;
}

const char *meshtls_config_shown(const struct meshtls_config *cfg, const char *key, char *buf,
                                 size_t cap, const char **source)
{
    const struct kent *e = find(cfg, key);
    const char *v = meshtls_config_get(cfg, key, source);
    if (!v || !e || cap == 0)
        return v;
    if (e->d->opts & MESHTLS_KEY_SECRET) {
        snprintf(buf, cap, "***");
        return buf;
    }
    if (!(e->d->opts & MESHTLS_KEY_URL))
        return v;
    /* scheme://user:PASSWORD@host...: the userinfo ends at the last '@' before the path */
    const char *auth = strstr(v, "://");
    if (!auth)
        return v;
    auth += 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        return v;
    snprintf(buf, cap, "%.*s***%s", (int)(colon + 1 - v), v, at);
    return buf;
}

/* The effective value of `key` of type `type`, for the typed getters. */
static int typed(const struct meshtls_config *cfg, const char *key, int type, int type2,
                 const char **v, const char **src, struct meshtls_err *err)
{
    const struct kent *e = find(cfg, key);
    if (!e || (e->d->type != type && e->d->type != type2))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "'%.64s' is not a configuration key of "
                               "that type",
                               key);
    *v = meshtls_config_get(cfg, key, src);
    if (!*v)
        return meshtls_err_set(err, MESHTLS_ENOENT, "%s is not set", key);
    return 0;
}

int meshtls_config_get_bool(const struct meshtls_config *cfg, const char *key, int *out,
                            struct meshtls_err *err)
{
    const char *v = NULL, *src = NULL;
    int b, rc = typed(cfg, key, MESHTLS_CFG_BOOL, MESHTLS_CFG_BOOL, &v, &src, err);
    if (rc)
        return rc;
    if (parse_bool(v, &b)) /* values are checked when set: only a broken table gets here */
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: '%.64s' is not a boolean for %s", src, v,
                               key);
    *out = b;
    return 0;
}

int meshtls_config_get_int(const struct meshtls_config *cfg, const char *key, long *out,
                           struct meshtls_err *err)
{
    const char *v = NULL, *src = NULL;
    long x;
    int rc = typed(cfg, key, MESHTLS_CFG_INT, MESHTLS_CFG_DURATION, &v, &src, err);
    if (rc)
        return rc;
    const struct kent *e = find(cfg, key);
    if (e->d->type == MESHTLS_CFG_INT ? parse_long(v, &x) : parse_duration(v, &x))
        return meshtls_err_set(err, MESHTLS_EINVAL, "%s: '%.64s' for %s: expected %s", src, v, key,
                               type_name(e->d));
    *out = x;
    return 0;
}

/* ---- environment ------------------------------------------------------------------ */

/* The value of `name` in `envp` (first occurrence, as getenv()), or NULL. */
static const char *env_find(char *const *envp, const char *name)
{
    size_t nl = strlen(name);
    for (char *const *e = envp; *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=')
            return *e + nl + 1;
    return NULL;
}

/* Warn about MESHTLS_<SECTION>_* variables that are no key (a typo is silent otherwise). */
static void env_strays(const struct meshtls_config *cfg, char *const *envp)
{
    for (char *const *v = envp; *v; v++) {
        const char *eq = strchr(*v, '=');
        if (strncmp(*v, "MESHTLS_", 8) != 0 || !eq)
            continue;
        size_t nl = (size_t)(eq - *v);
        int known = 0, sec = 0;
        for (size_t i = 0; i < cfg->n && !known; i++) {
            const struct kent *e = cfg->k[i];
            known =
                strlen(e->env) == nl && !strncmp(e->env, *v, nl) && !(e->d->opts & MESHTLS_KEY_ARG);
            size_t sl = 8 + sec_len(e->d->name) + 1; /* "MESHTLS_SERVER_" */
            if (nl > sl && !strncmp(e->env, *v, sl))
                sec = 1;
        }
        if (!known && sec)
            meshtls_log(MESHTLS_LOG_WARN,
                        "config: environment variable %.*s is not a meshtls "
                        "setting and is ignored (see docs/CONFIG.md)",
                        (int)(nl > 80 ? 80 : nl), *v);
    }
}

int meshtls_config_load_env(struct meshtls_config *cfg, char *const *envp, struct meshtls_err *err)
{
    int rc = 0;
    if (!envp)
        envp = environ;
    if (!envp)
        return 0;
    for (size_t i = 0; i < cfg->n; i++) {
        struct kent *e = cfg->k[i];
        if (e->d->opts & MESHTLS_KEY_ARG)
            continue; /* only its flag sets it; env_strays() warns about the variable */
        const char *canon = env_find(envp, e->env);
        const char *alias = e->d->alias ? env_find(envp, e->d->alias) : NULL;
        if (canon && alias)
            meshtls_log(MESHTLS_LOG_DEBUG, "config: %s and %s are both set; %s wins (%s)", e->env,
                        e->d->alias, e->env, e->d->name);
        if (canon || alias) {
            rc =
                slot_put(&e->stage, e, canon ? canon : alias, canon ? e->env : e->d->alias, 0, err);
            if (rc)
                goto out;
        }
    }
    env_strays(cfg, envp);
out:
    stage_end(cfg, MESHTLS_SRC_ENV, rc == 0);
    return rc;
}

/* ---- YAML ---------------------------------------------------------------------------- */

/* The parse state: the event walker plus the configuration being filled. */
struct yp {
    struct mt_yaml y;
    struct meshtls_config *cfg;
    char label[300]; /* "FILE:LINE" of the current key */
};

/* peer_tls key -> the keys it fills */
static const char *const PEER_KEYS[][3] = {
    {"cert_file", "server.cert_file", "client.cert_file"},
    {"key_file", "server.key_file", "client.key_file"},
    {"ca_file", "server.ca_file", "client.ca_file"},
    {"server_name", NULL, "client.server_name"},
};
#define N_PEER (sizeof(PEER_KEYS) / sizeof(PEER_KEYS[0]))

/* Record "FILE:LINE: <message>" for the current event and return `code`. */
static int yerr(struct yp *y, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int yerr(struct yp *y, int code, const char *fmt, ...)
{
    char msg[MESHTLS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return meshtls_err_set(y->y.err, code, "%s:%zu: %s", y->y.name, mt_yaml_line(&y->y), msg);
}

/* Refuse anchors (&a) and tags (!t) on the current event: config is plain data. */
static int yplain(struct yp *y)
{
    const yaml_event_t *ev = &y->y.ev;
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    }
    if (anchor)
        return yerr(y, MESHTLS_EPARSE, "YAML anchors (&%.32s) and aliases are not allowed",
                    (const char *)anchor);
    if (tag)
        return yerr(y, MESHTLS_EPARSE, "YAML tags (%.32s) are not allowed; write the plain value",
                    (const char *)tag);
    return 0;
}

static int ynext(struct yp *y)
{
    int rc = mt_yaml_next(&y->y);
    return rc ? rc : yplain(y);
}

/* Is the current scalar a YAML null (an empty value, ~ or null)? */
static int ynull(const struct yp *y)
{
    const yaml_event_t *ev = &y->y.ev;
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
            !strcmp(v, "NULL"));
}

/*
 * Read the value of key `e` (the current event is its name) into its staging
 * slot (checked: a single, non-null scalar).
 */
static int yvalue(struct yp *y, const struct kent *e, const char *shown)
{
    int rc;
    if ((rc = ynext(y)))
        return rc;
    if (y->y.ev.type != YAML_SCALAR_EVENT)
        return yerr(y, MESHTLS_EINVAL,
                    "%s must be a single value, not a list or mapping (expected %s)", shown,
                    e ? type_name(e->d) : "a file path");
    if (ynull(y))
        return yerr(y, MESHTLS_EINVAL, "%s has no value; give one, or remove the line", shown);
    if (strlen(mt_yaml_scalar(&y->y)) != y->y.ev.data.scalar.length)
        return yerr(y, MESHTLS_EINVAL, "the value of %s contains a NUL byte", shown);
    return 0;
}

/* Stage the current scalar for `e`; a key given twice in one file is an error. */
static int ystage(struct yp *y, struct kent *e, int from_peer)
{
    const char *v = mt_yaml_scalar(&y->y);
    if (e->stage.value && !e->stage.from_peer && !from_peer)
        return meshtls_err_set(y->y.err, MESHTLS_EINVAL, "%s: %s is set twice (first at %s)",
                               y->label, e->d->name, e->stage.label);
    if (e->stage.value && !e->stage.from_peer && from_peer)
        return validate(e->d, v, y->label, y->y.err); /* the role's own key wins */
    return slot_put(&e->stage, e, v, y->label, from_peer, y->y.err);
}

/* The `peer_tls:` mapping (the current event is its start). */
static int ypeer(struct yp *y)
{
    int rc, seen[N_PEER] = {0};
    char shown[80], hint[96];
    for (;;) {
        if ((rc = ynext(y)))
            return rc;
        if (y->y.ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (y->y.ev.type != YAML_SCALAR_EVENT)
            return yerr(y, MESHTLS_EPARSE, "expected a setting name under peer_tls");
        const char *key = mt_yaml_scalar(&y->y);
        size_t i;
        snprintf(y->label, sizeof(y->label), "%s:%zu", y->y.name, mt_yaml_line(&y->y));
        for (i = 0; i < N_PEER && strcmp(PEER_KEYS[i][0], key); i++)
            ;
        if (i == N_PEER) {
            hint[0] = '\0';
            for (size_t j = 0; j < N_PEER; j++)
                if (near(key, PEER_KEYS[j][0]))
                    snprintf(hint, sizeof(hint), " (did you mean 'peer_tls.%s'?)", PEER_KEYS[j][0]);
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL,
                                   "%s: unknown key 'peer_tls.%.64s'%s; peer_tls takes cert_file, "
                                   "key_file, ca_file and server_name",
                                   y->label, key, hint);
        }
        if (seen[i]++)
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL, "%s: peer_tls.%s is set twice",
                                   y->label, PEER_KEYS[i][0]);
        snprintf(shown, sizeof(shown), "peer_tls.%s", PEER_KEYS[i][0]);
        if ((rc = yvalue(y, find(y->cfg, PEER_KEYS[i][2]), shown)))
            return rc;
        for (int r = 1; r <= 2; r++) {
            struct kent *e = PEER_KEYS[i][r] ? find(y->cfg, PEER_KEYS[i][r]) : NULL;
            if (e && (rc = ystage(y, e, 1)))
                return rc;
        }
    }
}

/* One section mapping; `sec` is its name (the current event is the value's first). */
static int ysection(struct yp *y, const char *sec)
{
    int rc;
    char full[2 * NAME_MAX_LEN + 2], hint[160];
    if (y->y.ev.type == YAML_SCALAR_EVENT && ynull(y))
        return 0; /* "server:" with nothing under it */
    if (y->y.ev.type != YAML_MAPPING_START_EVENT)
        return yerr(y, MESHTLS_EINVAL,
                    "%s: expected a mapping of settings (key: value lines "
                    "indented under '%s:')",
                    sec, sec);
    if (!strcmp(sec, "peer_tls"))
        return ypeer(y);
    for (;;) {
        if ((rc = ynext(y)))
            return rc;
        if (y->y.ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (y->y.ev.type != YAML_SCALAR_EVENT)
            return yerr(y, MESHTLS_EPARSE, "expected a setting name under %s:", sec);
        const char *key = mt_yaml_scalar(&y->y);
        snprintf(y->label, sizeof(y->label), "%s:%zu", y->y.name, mt_yaml_line(&y->y));
        snprintf(full, sizeof(full), "%.32s.%.*s", sec, NAME_MAX_LEN, key);
        struct kent *e = strlen(key) <= NAME_MAX_LEN ? find(y->cfg, full) : NULL;
        if (!e) {
            suggest(y->cfg, sec, key, hint, sizeof(hint));
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL, "%s: unknown key '%s.%.64s'%s",
                                   y->label, sec, key,
                                   *hint ? hint : " (docs/CONFIG.md lists the keys)");
        }
        if (e->d->opts & MESHTLS_KEY_ARG)
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL,
                                   "%s: %s is an argument of one command, not a setting: give "
                                   "%s on the command line",
                                   y->label, e->d->name, e->d->flag);
        if ((rc = yvalue(y, e, e->d->name)) || (rc = ystage(y, e, 0)))
            return rc;
    }
}

/* Is `s` a section of some key, or peer_tls? */
static int known_section(const struct meshtls_config *cfg, const char *s)
{
    if (!strcmp(s, "peer_tls"))
        return 1;
    for (size_t i = 0; i < cfg->n; i++)
        if (in_section(cfg->k[i], s))
            return 1;
    return 0;
}

/* The document's top-level mapping (the current event is its start). */
static int ytop(struct yp *y)
{
    char secs[SECTIONS_MAX][NAME_MAX_LEN + 1], hint[96];
    size_t lines[SECTIONS_MAX], nsec = 0;
    int rc;
    for (;;) {
        if ((rc = ynext(y)))
            return rc;
        if (y->y.ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        const char *s = y->y.ev.type == YAML_SCALAR_EVENT ? mt_yaml_scalar(&y->y) : "";
        if (!*s || strlen(s) > NAME_MAX_LEN || !known_section(y->cfg, s)) {
            suggest(y->cfg, s, NULL, hint, sizeof(hint));
            return meshtls_err_set(y->y.err, MESHTLS_EINVAL, "%s:%zu: unknown section '%.64s'%s",
                                   y->y.name, mt_yaml_line(&y->y), s,
                                   *hint ? hint
                                         : " (expected server, client, log, peer_tls or another "
                                           "section of docs/CONFIG.md)");
        }
        for (size_t i = 0; i < nsec; i++)
            if (!strcmp(secs[i], s))
                return meshtls_err_set(y->y.err, MESHTLS_EINVAL,
                                       "%s:%zu: section '%s' appears twice (first at line %zu); "
                                       "merge them",
                                       y->y.name, mt_yaml_line(&y->y), s, lines[i]);
        if (nsec == SECTIONS_MAX)
            return yerr(y, MESHTLS_EINVAL, "too many sections (at most %d)", SECTIONS_MAX);
        snprintf(secs[nsec], sizeof(secs[nsec]), "%s", s);
        lines[nsec] = mt_yaml_line(&y->y);
        if ((rc = ynext(y)) || (rc = ysection(y, secs[nsec++])))
            return rc;
    }
}

int meshtls_config_load_buffer(struct meshtls_config *cfg, const char *buf, size_t len,
                               const char *name, struct meshtls_err *err)
{
    struct yp y = {.cfg = cfg};
    const char *label = name ? name : "(config)";
    int rc, opened = 0;
    if (len > CONFIG_FILE_MAX)
        return meshtls_err_set(err, MESHTLS_EPARSE,
                               "%s: larger than %d bytes; a configuration "
                               "file is a few lines",
                               label, CONFIG_FILE_MAX);
    if ((rc = mt_yaml_open(&y.y, buf ? buf : "", buf ? len : 0, label, err)) != 0)
        goto out;
    opened = 1;
    if ((rc = mt_yaml_expect(&y.y, YAML_STREAM_START_EVENT, "a YAML stream")) || (rc = ynext(&y)))
        goto out;
    if (y.y.ev.type == YAML_STREAM_END_EVENT)
        goto out; /* an empty file (or only comments) configures nothing */
    if (y.y.ev.type != YAML_DOCUMENT_START_EVENT) {
        rc = yerr(&y, MESHTLS_EPARSE, "expected a YAML document");
        goto out;
    }
    if ((rc = ynext(&y)))
        goto out;
    if (y.y.ev.type == YAML_MAPPING_START_EVENT) {
        if ((rc = ytop(&y)))
            goto out;
    } else if (!(y.y.ev.type == YAML_SCALAR_EVENT && ynull(&y))) { /* "---" alone is empty */
        rc = yerr(&y, MESHTLS_EPARSE,
                  "expected a mapping with server:, client:, log: or peer_tls: at the top");
        goto out;
    }
    if ((rc = mt_yaml_expect(&y.y, YAML_DOCUMENT_END_EVENT, "the end of the document")))
        goto out;
    if ((rc = mt_yaml_next(&y.y)))
        goto out;
    if (y.y.ev.type != YAML_STREAM_END_EVENT)
        rc = yerr(&y, MESHTLS_EPARSE, "a second YAML document (---); put everything in one");
out:
    if (opened)
        mt_yaml_close(&y.y);
    stage_end(cfg, MESHTLS_SRC_FILE, rc == 0);
    return rc;
}

int meshtls_config_load_file(struct meshtls_config *cfg, const char *path, struct meshtls_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = meshtls_read_file(path, CONFIG_FILE_MAX, &buf, &len, err);
    if (rc == 0)
        rc = meshtls_config_load_buffer(cfg, buf, len, path, err);
    free(buf);
    return rc;
}

/* ---- to TLS options ------------------------------------------------------------------- */

/* Does the peer_tls block fill `key`? */
static int peer_fills(const char *key)
{
    for (size_t i = 0; i < N_PEER; i++)
        for (int r = 1; r <= 2; r++)
            if (PEER_KEYS[i][r] && !strcmp(PEER_KEYS[i][r], key))
                return 1;
    return 0;
}

/* How to set `key`, for "X is not set" messages: "give --cert, set A (or B), or ...". */
static void how_to_set(const struct meshtls_config *cfg, const char *key, char *buf, size_t cap)
{
    const struct kent *e = find(cfg, key);
    size_t sl = sec_len(key);
    if (!e) {
        buf[0] = '\0';
        return;
    }
    if (e->d->opts & MESHTLS_KEY_ARG) {
        snprintf(buf, cap, "give %s", e->d->flag);
        return;
    }
    snprintf(buf, cap, "%s%s%sset %s%s%s%s, or add '%s:' under '%.*s:'%s in the config file",
             e->d->flag ? "give " : "", e->d->flag ? e->d->flag : "", e->d->flag ? ", " : "",
             e->env, e->d->alias ? " (or " : "", e->d->alias ? e->d->alias : "",
             e->d->alias ? ")" : "", key + sl + 1, (int)sl, key,
             peer_fills(key) ? " (or 'peer_tls:')" : "");
}

static const char *need(const struct meshtls_config *cfg, const char *key, int *rc,
                        struct meshtls_err *err)
{
    const char *v = meshtls_config_get(cfg, key, NULL);
    if (!v && !*rc) {
        char how[400];
        how_to_set(cfg, key, how, sizeof(how));
        *rc = meshtls_err_set(err, MESHTLS_EINVAL, "%s is not set: %s", key, how);
    }
    return v;
}

int meshtls_config_need(const struct meshtls_config *cfg, const char *key, const char **out,
                        struct meshtls_err *err)
{
    int rc = 0;
    const char *v = need(cfg, key, &rc, err);
    if (rc == 0)
        *out = v;
    return rc;
}

int meshtls_config_tls_opts(const struct meshtls_config *cfg, const char *role,
                            struct meshtls_tls_opts *out, struct meshtls_err *err)
{
    int rc = 0, server = !strcmp(role, "server");
    char k[64];
    struct meshtls_tls_opts o;
    memset(&o, 0, sizeof(o));
    if (!server && strcmp(role, "client") != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "role '%.32s': expected server or client",
                               role);
#define KEY(name) (snprintf(k, sizeof(k), "%s.%s", role, name), k)
    o.cert_file = need(cfg, KEY("cert_file"), &rc, err);
    o.key_file = need(cfg, KEY("key_file"), &rc, err);
    o.ca_file = need(cfg, KEY("ca_file"), &rc, err);
    o.crl_file = meshtls_config_get(cfg, KEY("crl_file"), NULL);
    const char *mv = meshtls_config_get(cfg, KEY("min_tls_version"), NULL);
    o.min_version = mv && !strcmp(mv, "1.2") ? MESHTLS_TLS_MIN_1_2 : MESHTLS_TLS_MIN_1_3;
#undef KEY
    if (rc)
        return rc;
    if (server) {
        int req = 1;
        long days = 30;
        if ((rc = meshtls_config_get_bool(cfg, "server.require_client_cert", &req, err)) ||
            (rc = meshtls_config_get_int(cfg, "server.expiry_warn_days", &days, err)))
            return rc;
        o.insecure_no_client_cert = !req;
        o.expiry_warn_days = (int)days; /* checked: 0..3650 */
    } else {
        o.server_name = meshtls_config_get(cfg, "client.server_name", NULL);
        o.verify_spiffe_id = meshtls_config_get(cfg, "client.verify_spiffe_id", NULL);
        o.verify_trust_domain = meshtls_config_get(cfg, "client.verify_trust_domain", NULL);
        if (!o.server_name && !o.verify_spiffe_id && !o.verify_trust_domain) {
            char how[400];
            how_to_set(cfg, "client.server_name", how, sizeof(how));
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "client.server_name is not set (nor client.verify_spiffe_id "
                                   "or client.verify_trust_domain), so nothing would check "
                                   "who the server is: %s",
                                   how);
        }
    }
    *out = o;
    return 0;
}

int meshtls_config_server_opts(const struct meshtls_config *cfg, struct meshtls_tls_opts *out,
                               struct meshtls_err *err)
{
    return meshtls_config_tls_opts(cfg, "server", out, err);
}

int meshtls_config_client_opts(const struct meshtls_config *cfg, struct meshtls_tls_opts *out,
                               struct meshtls_err *err)
{
    return meshtls_config_tls_opts(cfg, "client", out, err);
}
