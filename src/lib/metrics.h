/*
 * metrics.h - a small labelled metrics registry (internal to meshtls; used by the proxy, the
 * control plane and the router) and its Prometheus text exposition.
 *
 * Shape.  A registry holds families (one metric name each: counter, gauge or histogram, with
 * help text and label names); a family holds series, one per tuple of label values.  Families
 * are registered at start-up; series are created by mt_series_get() when a tuple is first
 * seen, and callers keep the returned pointer, so the hot path never looks anything up.
 *
 * Shards.  The registry is created with `nshards` slots per series (typically one per worker
 * plus one shared by the main and other threads).  Hot-path calls name their shard and touch
 * only that shard's slot, which sits on its own cache line(s), with relaxed atomics: no lock,
 * no cache line bouncing between workers.  A scrape sums the shards.  A shard may be shared by
 * several threads (the atomics keep totals exact); it is only slower when it is.
 *
 * Bounds.  A family holds at most MT_SERIES_MAX series (mt_family_set_max_series() changes
 * it); past that mt_series_get() fails with MESHTLS_EINVAL rather than grow without bound
 * (a label fed by peers, e.g. a SPIFFE ID, must not make memory grow with the attacker).  At
 * most MT_LABELS_MAX labels per family, MT_BUCKETS_MAX bucket bounds per histogram, and a
 * rendered page of at most MT_RENDER_MAX bytes.
 *
 * Threads.  Registration, mt_series_get() and rendering take the registry's mutex; the
 * hot-path calls (mt_counter_add, mt_gauge_add, mt_gauge_set, mt_histogram_observe) take
 * none and may run at any time on any series.  Nothing is freed before mt_metrics_free(),
 * which must run after every thread that updates the registry has stopped.
 *
 * Lifetime: the registry owns its families and series; pointers to them stay valid until
 * mt_metrics_free().  Every name, help text and label string passed in is copied.
 *
 * Errors follow meshtls/err.h: 0 or a negative MESHTLS_E* code, with a message naming the
 * metric and the rule it broke.  Out-parameters are written only on success.
 */
#ifndef MESHTLS_LIB_METRICS_H
#define MESHTLS_LIB_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "meshtls/err.h"

#define MT_SERIES_MAX 256         /* default bound on series per family */
#define MT_LABELS_MAX 8           /* labels per family */
#define MT_BUCKETS_MAX 32         /* bucket bounds per histogram (+Inf is implicit) */
#define MT_RENDER_MAX (16u << 20) /* bytes of one rendered page */
#define MT_LABEL_VALUE_MAX 1024   /* bytes of one label value */

struct mt_metrics; /* a registry */
struct mt_family;  /* one metric name and its series */
struct mt_series;  /* one tuple of label values of a family */

/* A NULL-terminated list, for label names and values: MT_LIST("decision"). */
#define MT_LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

/**
 * A new empty registry with `nshards` (>= 1) slots per series.
 * @return 0, MESHTLS_EINVAL or MESHTLS_ENOMEM; `*out` is the caller's (mt_metrics_free).
 */
int mt_metrics_new(unsigned nshards, struct mt_metrics **out, struct meshtls_err *err);

/** Free `r` with all its families and series (NULL is fine).  No thread may still use it. */
void mt_metrics_free(struct mt_metrics *r);

/** @return the number of shards of `r`. */
unsigned mt_metrics_shards(const struct mt_metrics *r);

/**
 * Register a counter (monotonic, uint64 per shard) named `name` with `help` and the label
 * names `labels` (a NULL-terminated list, or NULL for none).  A family without labels gets
 * its one series at once (mt_series_get(f, NULL, ...) returns it), so it renders 0 from the
 * start.  Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, labels [a-zA-Z_][a-zA-Z0-9_]*
 * not starting with "__"; a name registered twice is an error.
 * @return 0, MESHTLS_EINVAL, MESHTLS_EEXIST or MESHTLS_ENOMEM; `*out` (may be NULL) is
 * borrowed from `r`.
 */
int mt_counter_new(struct mt_metrics *r, const char *name, const char *help,
                   const char *const *labels, struct mt_family **out, struct meshtls_err *err);

/**
 * Register a gauge: its value is what mt_gauge_set() last stored plus the sum over shards of
 * mt_gauge_add() deltas (use one or the other per series: set for values one thread knows
 * whole, add for values each worker changes, like open connections).  As mt_counter_new.
 */
int mt_gauge_new(struct mt_metrics *r, const char *name, const char *help,
                 const char *const *labels, struct mt_family **out, struct meshtls_err *err);

/**
 * Register a histogram with the `nbounds` (1..MT_BUCKETS_MAX) strictly increasing finite
 * upper bounds at `bounds` (copied); +Inf is added.  "le" may not be a label.  As
 * mt_counter_new.
 */
int mt_histogram_new(struct mt_metrics *r, const char *name, const char *help,
                     const char *const *labels, const double *bounds, size_t nbounds,
                     struct mt_family **out, struct meshtls_err *err);

/** Change the bound on the number of series of `f` (default MT_SERIES_MAX). */
void mt_family_set_max_series(struct mt_family *f, size_t max);

/**
 * The series of `f` for the label values `values` (NULL-terminated, as many as the family
 * has labels, each at most MT_LABEL_VALUE_MAX bytes; NULL for a family without labels),
 * created if new.  Takes the registry mutex: call at set-up or rarely, and keep the pointer.
 * @return 0, MESHTLS_EINVAL (wrong number of values, too long, or the family already holds
 * its maximum of series) or MESHTLS_ENOMEM; `*out` is borrowed from the registry.
 */
int mt_series_get(struct mt_family *f, const char *const *values, struct mt_series **out,
                  struct meshtls_err *err);

/**
 * A series of a counter or gauge family whose value `fn(arg)` computes at each scrape
 * (seconds to a certificate's expiry, a cache's size).  `fn` runs under the registry mutex
 * on the scraping thread: it must not register, create series or render (they take that
 * mutex); reading other series with mt_series_value() is fine (one family derived from
 * another, like validation failures from handshake errors).  `arg` is borrowed and must
 * outlive the registry or the caller's last scrape.  Fails with MESHTLS_EEXIST when the tuple
 * already has a series.  Same bounds and errors as mt_series_get().
 */
int mt_series_fn(struct mt_family *f, const char *const *values, double (*fn)(void *arg), void *arg,
                 struct meshtls_err *err);

/**
 * Emitting series at scrape time, for a family whose label values change while the program
 * runs (one series per CRL in use, labelled by issuer): mt_family_collect() gives the family
 * a collector that the renderer calls under the registry mutex with an emitter, and each
 * mt_emit() call writes one sample.  Nothing is stored between scrapes, so a value that went
 * away (a CRL no longer loaded) simply stops being rendered.
 */
struct mt_emit;

/**
 * Let `fn(arg, e)` add samples to the counter or gauge family `f` at each scrape, after the
 * family's stored series.  `fn` runs under the registry mutex (the same rules as
 * mt_series_fn()); `arg` is borrowed and must outlive the registry or the last scrape.  At
 * most the family's bound on series (MT_SERIES_MAX by default) are rendered per scrape.
 * @return 0, or MESHTLS_EINVAL for a histogram, a NULL `fn` or a second collector.
 */
int mt_family_collect(struct mt_family *f, void (*fn)(void *arg, struct mt_emit *e), void *arg,
                      struct meshtls_err *err);

/**
 * From a collector: one sample of the family with the label values `values` (as many as the
 * family has labels, each at most MT_LABEL_VALUE_MAX bytes; copied into the page) and value
 * `v`.  A wrong count, a value too long or a sample past the bound is skipped.
 * @return 0, or -1 when skipped.
 */
int mt_emit(struct mt_emit *e, const char *const *values, double v);

/* ---- the hot path: no lock, no allocation; `shard` >= the registry's count is taken as the
 * last shard.  Calls on a series of another type do nothing. ---- */

/** Add `n` to a counter series in `shard`. */
void mt_counter_add(struct mt_series *s, unsigned shard, uint64_t n);

/** Add `delta` (may be negative) to a gauge series in `shard`. */
void mt_gauge_add(struct mt_series *s, unsigned shard, int64_t delta);

/** Set the stored part of a gauge series to `v` (not sharded). */
void mt_gauge_set(struct mt_series *s, double v);

/** Count the observation `v` in a histogram series in `shard`. */
void mt_histogram_observe(struct mt_series *s, unsigned shard, double v);

/* ---- reading ---- */

/** The current value of a counter or gauge series, summed over shards (or its callback's). */
double mt_series_value(struct mt_series *s);

/** The total count of a histogram series, summed over shards. */
uint64_t mt_histogram_count(struct mt_series *s);

/**
 * Render every family of `r`, in registration order and each family's series in creation
 * order, in the Prometheus text exposition format (version 0.0.4): HELP and TYPE lines, label
 * values escaped (`\\`, `\"`, `\n`), histograms as cumulative `_bucket{le="…"}`, `_sum` and
 * `_count`.  Numbers: counters as integers, other values with up to 15 significant digits,
 * `+Inf`, `-Inf`, `NaN`.
 * @return 0, MESHTLS_ENOMEM or MESHTLS_EINVAL (page past MT_RENDER_MAX); `*out` (NUL
 * terminated, caller frees) and `*len` on success.
 */
int mt_metrics_render(struct mt_metrics *r, char **out, size_t *len, struct meshtls_err *err);

#endif
