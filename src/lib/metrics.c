/*
 * metrics.c - the labelled metrics registry and its Prometheus text exposition; the rules
 * (shards, bounds, threads, lifetime) are in metrics.h.
 *
 * Memory layout.  Each series owns one block of `nshards` slots, each slot rounded up to a
 * whole number of 64-byte cache lines and the block aligned to 64, so two workers updating
 * the same series never write the same line.  A counter slot is one uint64, a gauge slot one
 * int64, a histogram slot (nbounds + 1) uint64 bucket counts (not cumulative: one increment
 * per observation) and the sum as the bits of a double.  A scrape reads every slot with
 * relaxed loads: totals are exact once writers stop, and at any moment each counter is a value
 * it really had in each shard (no torn reads), which is all Prometheus asks.
 *
 * Why per-series blocks rather than one arena per shard: series are created at any time (a
 * new label value), and a block per series needs no arena to grow or move under the hot path.
 * The cost is memory: 64 bytes x shards per counter series (9 shards, 256 series: 147 KiB).
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define LINE 64

enum mt_type {
    MT_COUNTER = 1,
    MT_GAUGE,
    MT_HISTOGRAM,
};

struct mt_series {
    struct mt_family *fam;   /* owner */
    char **values;           /* label values, fam->nlabels of them (owned) */
    struct mt_series *next;  /* creation order */
    double (*fn)(void *arg); /* callback series: value computed at scrape, no slots */
    void *fn_arg;
    _Atomic uint64_t set_bits; /* gauge: the double last given to mt_gauge_set */
    unsigned char *slots;      /* nshards x stride bytes, 64-aligned (owned) */
    /* Copies of the family's and registry's constants, so a hot-path update reads one line
     * of this struct and no other object. */
    enum mt_type type;
    unsigned nshards;
    size_t stride;
};

struct mt_family {
    struct mt_metrics *reg;
    enum mt_type type;
    char *name, *help; /* owned */
    char **labels;     /* owned, nlabels of them */
    size_t nlabels;
    double *bounds; /* histogram upper bounds, owned */
    size_t nbounds;
    size_t stride; /* bytes per shard slot, a multiple of LINE */
    size_t nseries, max_series;
    struct mt_series *series, **series_tail;
    void (*collect)(void *arg, struct mt_emit *e); /* mt_family_collect(), or NULL */
    void *collect_arg;
    struct mt_family *next; /* registration order */
};

struct mt_metrics {
    unsigned nshards;
    pthread_mutex_t mu; /* families, series lists, rendering */
    struct mt_family *fams, **fams_tail;
};

/* ---- slots ----------------------------------------------------------------------------- */

static _Atomic uint64_t *slot_u64(struct mt_series *s, unsigned shard)
{
    if (shard >= s->nshards)
        shard = s->nshards - 1;
    return (_Atomic uint64_t *)(void *)(s->slots + (size_t)shard * s->stride);
}

static uint64_t dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

void mt_counter_add(struct mt_series *s, unsigned shard, uint64_t n)
{
    if (s->type != MT_COUNTER || !s->slots)
        return;
    atomic_fetch_add_explicit(slot_u64(s, shard), n, memory_order_relaxed);
}

void mt_gauge_add(struct mt_series *s, unsigned shard, int64_t delta)
{
    if (s->type != MT_GAUGE || !s->slots)
        return;
    /* two's complement: adding the uint64 image of a negative delta subtracts */
    atomic_fetch_add_explicit(slot_u64(s, shard), (uint64_t)delta, memory_order_relaxed);
}

void mt_gauge_set(struct mt_series *s, double v)
{
    if (s->type != MT_GAUGE)
        return;
    atomic_store_explicit(&s->set_bits, dbl_bits(v), memory_order_relaxed);
}

void mt_histogram_observe(struct mt_series *s, unsigned shard, double v)
{
    struct mt_family *f = s->fam;
    if (f->type != MT_HISTOGRAM || !s->slots)
        return;
    _Atomic uint64_t *b = slot_u64(s, shard);
    size_t i = 0;
    while (i < f->nbounds && !(v <= f->bounds[i])) /* NaN lands in +Inf */
        i++;
    atomic_fetch_add_explicit(&b[i], 1, memory_order_relaxed);
    /* The sum: a CAS loop on the double's bits, uncontended unless threads share a shard. */
    _Atomic uint64_t *sum = &b[f->nbounds + 1];
    uint64_t old = atomic_load_explicit(sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(sum, &old, dbl_bits(bits_dbl(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Sum of slot word `i` over every shard. */
static uint64_t sum_word(struct mt_series *s, size_t i)
{
    uint64_t t = 0;
    for (unsigned k = 0; k < s->nshards; k++)
        t += atomic_load_explicit(&slot_u64(s, k)[i], memory_order_relaxed);
    return t;
}

double mt_series_value(struct mt_series *s)
{
    if (s->fn)
        return s->fn(s->fn_arg);
    switch (s->fam->type) {
    case MT_COUNTER: return (double)sum_word(s, 0);
    case MT_GAUGE:
        return bits_dbl(atomic_load_explicit(&s->set_bits, memory_order_relaxed)) +
               (double)(int64_t)sum_word(s, 0);
    default: return (double)mt_histogram_count(s);
    }
}

uint64_t mt_histogram_count(struct mt_series *s)
{
    if (s->fam->type != MT_HISTOGRAM || !s->slots)
        return 0;
    uint64_t t = 0;
    for (size_t i = 0; i <= s->fam->nbounds; i++)
        t += sum_word(s, i);
    return t;
}

/* ---- registration ---------------------------------------------------------------------- */

int mt_metrics_new(unsigned nshards, struct mt_metrics **out, struct meshtls_err *err)
{
    if (nshards == 0 || nshards > 4096)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "metrics: %u shards: give 1 to 4096 (one per worker plus one)",
                               nshards);
    struct mt_metrics *r = calloc(1, sizeof(*r));
    if (!r)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "metrics: out of memory");
    r->nshards = nshards;
    r->fams_tail = &r->fams;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

unsigned mt_metrics_shards(const struct mt_metrics *r)
{
    return r->nshards;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void series_free(struct mt_series *s, size_t nlabels)
{
    free_strv(s->values, nlabels);
    free(s->slots);
    free(s);
}

static void family_free(struct mt_family *f)
{
    for (struct mt_series *s = f->series, *next; s; s = next) {
        next = s->next;
        series_free(s, f->nlabels);
    }
    free(f->name);
    free(f->help);
    free_strv(f->labels, f->nlabels);
    free(f->bounds);
    free(f);
}

void mt_metrics_free(struct mt_metrics *r)
{
    if (!r)
        return;
    for (struct mt_family *f = r->fams, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int name_ok(const char *s, int colon)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || (colon && *s == ':')))
            return 0;
    return 1;
}

static int series_new(struct mt_family *f, const char *const *values, struct mt_series **out,
                      struct meshtls_err *err);

static int family_new(struct mt_metrics *r, enum mt_type type, const char *name, const char *help,
                      const char *const *labels, const double *bounds, size_t nbounds,
                      struct mt_family **out, struct meshtls_err *err)
{
    size_t nl = 0;
    if (!name_ok(name, 1))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "metric name '%s': use letters, digits, '_' and ':', not a digit "
                               "first",
                               name ? name : "(null)");
    for (; labels && labels[nl]; nl++) {
        const char *l = labels[nl];
        if (!name_ok(l, 0) || !strncmp(l, "__", 2))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "metric %s: label name '%s': use letters, digits and '_', "
                                   "not a digit or \"__\" first",
                                   name, l);
        if (type == MT_HISTOGRAM && !strcmp(l, "le"))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "metric %s: 'le' is the bucket label of a histogram; name "
                                   "the label otherwise",
                                   name);
        for (size_t j = 0; j < nl; j++)
            if (!strcmp(labels[j], l))
                return meshtls_err_set(err, MESHTLS_EINVAL, "metric %s: label '%s' given twice",
                                       name, l);
    }
    if (nl > MT_LABELS_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "metric %s: %zu labels, at most %d", name, nl,
                               MT_LABELS_MAX);
    if (type == MT_HISTOGRAM) {
        if (nbounds < 1 || nbounds > MT_BUCKETS_MAX || !bounds)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "histogram %s: %zu bucket bounds, give 1 to %d", name, nbounds,
                                   MT_BUCKETS_MAX);
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
                return meshtls_err_set(err, MESHTLS_EINVAL,
                                       "histogram %s: bucket bound %zu (%g) must be finite and "
                                       "greater than the one before",
                                       name, i, bounds[i]);
    }

    int rc = MESHTLS_ENOMEM;
    struct mt_family *f = calloc(1, sizeof(*f));
    if (!f)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "metric %s: out of memory", name);
    f->reg = r;
    f->type = type;
    f->max_series = MT_SERIES_MAX;
    f->series_tail = &f->series;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->nlabels = nl;
    f->labels = nl ? calloc(nl, sizeof(char *)) : NULL;
    if (!f->name || !f->help || (nl && !f->labels))
        goto fail;
    for (size_t i = 0; i < nl; i++)
        if (!(f->labels[i] = strdup(labels[i])))
            goto fail;
    size_t words = 1;
    if (type == MT_HISTOGRAM) {
        if (!(f->bounds = malloc(nbounds * sizeof(double))))
            goto fail;
        memcpy(f->bounds, bounds, nbounds * sizeof(double));
        f->nbounds = nbounds;
        words = nbounds + 2; /* buckets, +Inf, sum */
    }
    f->stride = (words * sizeof(uint64_t) + LINE - 1) / LINE * LINE;

    pthread_mutex_lock(&r->mu);
    for (struct mt_family *g = r->fams; g; g = g->next)
        if (!strcmp(g->name, name)) {
            pthread_mutex_unlock(&r->mu);
            rc = meshtls_err_set(err, MESHTLS_EEXIST, "metric %s is registered twice", name);
            goto fail_quiet;
        }
    if (nl == 0 && (rc = series_new(f, NULL, NULL, err)) != 0) {
        pthread_mutex_unlock(&r->mu);
        goto fail_quiet;
    }
    *r->fams_tail = f;
    r->fams_tail = &f->next;
    pthread_mutex_unlock(&r->mu);
    if (out)
        *out = f;
    return 0;
fail:
    rc = meshtls_err_set(err, MESHTLS_ENOMEM, "metric %s: out of memory", name);
fail_quiet:
    family_free(f);
    return rc;
}

int mt_counter_new(struct mt_metrics *r, const char *name, const char *help,
                   const char *const *labels, struct mt_family **out, struct meshtls_err *err)
{
    return family_new(r, MT_COUNTER, name, help, labels, NULL, 0, out, err);
}

int mt_gauge_new(struct mt_metrics *r, const char *name, const char *help,
                 const char *const *labels, struct mt_family **out, struct meshtls_err *err)
{
    return family_new(r, MT_GAUGE, name, help, labels, NULL, 0, out, err);
}

int mt_histogram_new(struct mt_metrics *r, const char *name, const char *help,
                     const char *const *labels, const double *bounds, size_t nbounds,
                     struct mt_family **out, struct meshtls_err *err)
{
    return family_new(r, MT_HISTOGRAM, name, help, labels, bounds, nbounds, out, err);
}

void mt_family_set_max_series(struct mt_family *f, size_t max)
{
    pthread_mutex_lock(&f->reg->mu);
    f->max_series = max;
    pthread_mutex_unlock(&f->reg->mu);
}

/* ---- series ---------------------------------------------------------------------------- */

/* Check `values` against `f`'s labels.  @return 0 or MESHTLS_EINVAL. */
static int values_ok(struct mt_family *f, const char *const *values, struct meshtls_err *err)
{
    size_t n = 0;
    for (; values && values[n]; n++)
        if (n < f->nlabels && strlen(values[n]) > MT_LABEL_VALUE_MAX)
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "metric %s: value of label %s is longer than %d bytes", f->name,
                                   f->labels[n], MT_LABEL_VALUE_MAX);
    if (n != f->nlabels)
        return meshtls_err_set(err, MESHTLS_EINVAL, "metric %s: %zu label values for %zu labels",
                               f->name, n, f->nlabels);
    return 0;
}

static struct mt_series *find(struct mt_family *f, const char *const *values)
{
    for (struct mt_series *s = f->series; s; s = s->next) {
        size_t i = 0;
        while (i < f->nlabels && !strcmp(s->values[i], values[i]))
            i++;
        if (i == f->nlabels)
            return s;
    }
    return NULL;
}

/* Create a series of `f` (registry mutex held, or `f` not yet published) with slots. */
static int series_new(struct mt_family *f, const char *const *values, struct mt_series **out,
                      struct meshtls_err *err)
{
    if (f->nseries >= f->max_series)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "metric %s: already %zu series, the most it may hold: a label "
                               "takes too many values",
                               f->name, f->nseries);
    struct mt_series *s = calloc(1, sizeof(*s));
    if (!s)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "metric %s: out of memory", f->name);
    s->fam = f;
    s->type = f->type;
    s->nshards = f->reg->nshards;
    s->stride = f->stride;
    if (f->nlabels && !(s->values = calloc(f->nlabels, sizeof(char *))))
        goto nomem;
    for (size_t i = 0; i < f->nlabels; i++)
        if (!(s->values[i] = strdup(values[i])))
            goto nomem;
    size_t bytes = f->stride * f->reg->nshards;
    if (!(s->slots = aligned_alloc(LINE, bytes)))
        goto nomem;
    memset(s->slots, 0, bytes); /* all-zero bits: 0 counts and a 0.0 sum */
    *f->series_tail = s;
    f->series_tail = &s->next;
    f->nseries++;
    if (out)
        *out = s;
    return 0;
nomem:
    series_free(s, f->nlabels);
    return meshtls_err_set(err, MESHTLS_ENOMEM, "metric %s: out of memory", f->name);
}

int mt_series_get(struct mt_family *f, const char *const *values, struct mt_series **out,
                  struct meshtls_err *err)
{
    int rc = values_ok(f, values, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&f->reg->mu);
    struct mt_series *s = find(f, values);
    if (s && s->fn)
        rc = meshtls_err_set(err, MESHTLS_EEXIST,
                             "metric %s: this series is computed by a callback", f->name);
    else if (!s)
        rc = series_new(f, values, &s, err);
    pthread_mutex_unlock(&f->reg->mu);
    if (rc == 0)
        *out = s;
    return rc;
}

int mt_series_fn(struct mt_family *f, const char *const *values, double (*fn)(void *arg), void *arg,
                 struct meshtls_err *err)
{
    if (f->type == MT_HISTOGRAM || !fn)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "metric %s: a callback series needs a counter or gauge and a "
                               "function",
                               f->name);
    int rc = values_ok(f, values, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&f->reg->mu);
    struct mt_series *s = find(f, values);
    if (s && (s->fn || f->nlabels))
        rc = meshtls_err_set(err, MESHTLS_EEXIST, "metric %s: this series exists already", f->name);
    else if (!s)
        rc = series_new(f, values, &s, err);
    if (rc == 0) {
        /* A family without labels has its series from the start: it becomes the callback. */
        s->fn = fn;
        s->fn_arg = arg;
    }
    pthread_mutex_unlock(&f->reg->mu);
    return rc;
}

int mt_family_collect(struct mt_family *f, void (*fn)(void *arg, struct mt_emit *e), void *arg,
                      struct meshtls_err *err)
{
    if (f->type == MT_HISTOGRAM || !fn)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "metric %s: a collector needs a counter or gauge and a function",
                               f->name);
    int rc = 0;
    pthread_mutex_lock(&f->reg->mu);
    if (f->collect)
        rc = meshtls_err_set(err, MESHTLS_EINVAL, "metric %s has a collector already", f->name);
    else
        f->collect = fn, f->collect_arg = arg;
    pthread_mutex_unlock(&f->reg->mu);
    return rc;
}

/* ---- rendering ------------------------------------------------------------------------- */

/* A growable output buffer, bounded by MT_RENDER_MAX. */
struct obuf {
    char *p;
    size_t n, cap;
    int failed; /* MESHTLS_ENOMEM or MESHTLS_EINVAL once an append failed */
};

static int grow(struct obuf *b, size_t need)
{
    if (b->failed)
        return -1;
    if (b->n + need + 1 <= b->cap)
        return 0;
    if (b->n + need + 1 > MT_RENDER_MAX) {
        b->failed = MESHTLS_EINVAL;
        return -1;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + need + 1)
        cap *= 2;
    if (cap > MT_RENDER_MAX)
        cap = MT_RENDER_MAX;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = MESHTLS_ENOMEM;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put(struct obuf *b, const char *s, size_t k)
{
    if (grow(b, k) == 0) {
        memcpy(b->p + b->n, s, k);
        b->n += k;
        b->p[b->n] = '\0';
    }
}

static void puts_(struct obuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* `s` with `\` and newline escaped, and `"` too when `quote` (label values; HELP text
 * escapes only the first two, as the format says). */
static void put_escaped(struct obuf *b, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *e = *s == '\\'           ? "\\\\"
                        : *s == '\n'         ? "\\n"
                        : quote && *s == '"' ? "\\\""
                                             : NULL;
        if (!e)
            continue;
        put(b, run, (size_t)(s - run));
        puts_(b, e);
        run = s + 1;
    }
    put(b, run, (size_t)(s - run));
}

/* A sample value: Prometheus accepts Go's float syntax, with +Inf, -Inf and NaN. */
static void fmt_value(char *num, size_t cap, double v)
{
    if (isnan(v))
        snprintf(num, cap, "NaN");
    else if (isinf(v))
        snprintf(num, cap, v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(num, cap, "%.15g", v);
}

/* `name{l1="v1",...,extra}` for label values `values` of `f` (`extra`, e.g. `le="0.5"`, may
 * be NULL). */
static void put_name(struct obuf *b, struct mt_family *f, const char *const *values,
                     const char *suffix, const char *extra)
{
    puts_(b, f->name);
    if (suffix)
        puts_(b, suffix);
    if (f->nlabels == 0 && !extra)
        return;
    put(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i)
            put(b, ",", 1);
        puts_(b, f->labels[i]);
        put(b, "=\"", 2);
        put_escaped(b, values[i], 1);
        put(b, "\"", 1);
    }
    if (extra) {
        if (f->nlabels)
            put(b, ",", 1);
        puts_(b, extra);
    }
    put(b, "}", 1);
}

static void put_sample_name(struct obuf *b, struct mt_series *s, const char *suffix,
                            const char *extra)
{
    put_name(b, s->fam, (const char *const *)s->values, suffix, extra);
}

static void put_line_end(struct obuf *b, const char *num)
{
    put(b, " ", 1);
    puts_(b, num);
    put(b, "\n", 1);
}

/* A collector's view of the page being rendered (mt_family_collect). */
struct mt_emit {
    struct obuf *b;
    struct mt_family *f;
    size_t n; /* samples emitted so far this scrape */
};

int mt_emit(struct mt_emit *e, const char *const *values, double v)
{
    struct mt_family *f = e->f;
    size_t n = 0;
    for (; values && values[n]; n++)
        if (strlen(values[n]) > MT_LABEL_VALUE_MAX)
            return -1;
    if (n != f->nlabels || e->n >= f->max_series)
        return -1;
    e->n++;
    char num[64];
    fmt_value(num, sizeof(num), v);
    put_name(e->b, f, values, NULL, NULL);
    put_line_end(e->b, num);
    return 0;
}

static void render_histogram(struct obuf *b, struct mt_series *s)
{
    struct mt_family *f = s->fam;
    char num[64], le[80];
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += sum_word(s, i);
        if (i < f->nbounds) {
            fmt_value(num, sizeof(num), f->bounds[i]);
            snprintf(le, sizeof(le), "le=\"%s\"", num);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        put_sample_name(b, s, "_bucket", le);
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cum);
        put_line_end(b, num);
    }
    double sum = 0;
    for (unsigned k = 0; k < f->reg->nshards; k++)
        sum +=
            bits_dbl(atomic_load_explicit(&slot_u64(s, k)[f->nbounds + 1], memory_order_relaxed));
    put_sample_name(b, s, "_sum", NULL);
    fmt_value(num, sizeof(num), sum);
    put_line_end(b, num);
    put_sample_name(b, s, "_count", NULL);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)cum); /* the +Inf bucket: consistent */
    put_line_end(b, num);
}

int mt_metrics_render(struct mt_metrics *r, char **out, size_t *len, struct meshtls_err *err)
{
    static const char *const type_names[] = {
        [MT_COUNTER] = "counter", [MT_GAUGE] = "gauge", [MT_HISTOGRAM] = "histogram"};
    struct obuf b = {0};
    grow(&b, 0);
    pthread_mutex_lock(&r->mu);
    for (struct mt_family *f = r->fams; f && !b.failed; f = f->next) {
        puts_(&b, "# HELP ");
        puts_(&b, f->name);
        put(&b, " ", 1);
        put_escaped(&b, f->help, 0);
        puts_(&b, "\n# TYPE ");
        puts_(&b, f->name);
        put(&b, " ", 1);
        puts_(&b, type_names[f->type]);
        put(&b, "\n", 1);
        for (struct mt_series *s = f->series; s; s = s->next) {
            if (f->type == MT_HISTOGRAM) {
                render_histogram(&b, s);
                continue;
            }
            char num[64];
            if (f->type == MT_COUNTER && !s->fn)
                snprintf(num, sizeof(num), "%llu", (unsigned long long)sum_word(s, 0));
            else
                fmt_value(num, sizeof(num), mt_series_value(s));
            put_sample_name(&b, s, NULL, NULL);
            put_line_end(&b, num);
        }
        if (f->collect) {
            struct mt_emit e = {&b, f, f->nseries};
            f->collect(f->collect_arg, &e);
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (b.failed) {
        free(b.p);
        return b.failed == MESHTLS_ENOMEM
                   ? meshtls_err_set(err, MESHTLS_ENOMEM, "metrics: out of memory rendering")
                   : meshtls_err_set(err, MESHTLS_EINVAL,
                                     "metrics: the page would exceed %u bytes: too many series",
                                     MT_RENDER_MAX);
    }
    *out = b.p;
    *len = b.n;
    return 0;
}
