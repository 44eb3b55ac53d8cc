/*
 * test_metrics.c - src/lib/metrics.c: rendered pages as data, label and help escaping,
 * histogram buckets, exact totals from threads adding concurrently, and every bound.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

static char *render(struct mt_metrics *r)
{
    char *out = NULL;
    size_t len = 0;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = mt_metrics_render(r, &out, &len, &e);
    CHECK_INT_EQ(rc, 0);
    CHECK(out && strlen(out) == len);
    return out;
}

static double cb_value;
static double cb(void *arg)
{
    return *(double *)arg;
}

TEST(render_page)
{
    struct mt_metrics *r = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_metrics_new(3, &r, &e), 0);
    struct mt_family *hs, *dec, *act, *exp, *dur, *conns;
    struct mt_series *ok, *fail, *allow, *deny, *a, *d1, *d2;
    CHECK_INT_EQ(mt_counter_new(r, "meshtls_tls_handshakes_total", "TLS handshakes by result.",
                                MT_LIST("result"), &hs, &e),
                 0);
    CHECK_INT_EQ(mt_counter_new(r, "meshtls_connections_total", "Accepted client connections.",
                                NULL, &conns, &e),
                 0);
    CHECK_INT_EQ(mt_counter_new(r, "meshtls_policy_decisions_total", "Identity policy decisions.",
                                MT_LIST("decision", "service"), &dec, &e),
                 0);
    CHECK_INT_EQ(
        mt_gauge_new(r, "meshtls_connections_active", "Open client connections.", NULL, &act, &e),
        0);
    CHECK_INT_EQ(mt_gauge_new(r, "meshtls_cert_expiry_days",
                              "Days until our own certificate expires.", NULL, &exp, &e),
                 0);
    const double bounds[] = {0.001, 0.01, 0.1, 2.5};
    CHECK_INT_EQ(mt_histogram_new(r, "meshtls_tls_handshake_duration_seconds",
                                  "Successful handshake time.", MT_LIST("listener"), bounds, 4,
                                  &dur, &e),
                 0);
    CHECK_INT_EQ(mt_series_get(hs, MT_LIST("success"), &ok, &e), 0);
    CHECK_INT_EQ(mt_series_get(hs, MT_LIST("failure"), &fail, &e), 0);
    CHECK_INT_EQ(mt_series_get(dec, MT_LIST("allow", "billing"), &allow, &e), 0);
    CHECK_INT_EQ(mt_series_get(dec, MT_LIST("deny", "a\\b\"c\nd"), &deny, &e), 0);
    struct mt_series *again = NULL;
    CHECK_INT_EQ(mt_series_get(hs, MT_LIST("success"), &again, &e), 0);
    CHECK(again == ok);
    CHECK_INT_EQ(mt_series_get(act, NULL, &a, &e), 0);
    cb_value = 89.5;
    CHECK_INT_EQ(mt_series_fn(exp, NULL, cb, &cb_value, &e), 0);
    CHECK_INT_EQ(mt_series_get(dur, MT_LIST("main"), &d1, &e), 0);
    CHECK_INT_EQ(mt_series_get(dur, MT_LIST("status"), &d2, &e), 0);

    mt_counter_add(ok, 0, 5);
    mt_counter_add(ok, 1, 7);
    mt_counter_add(ok, 2, 1);
    mt_counter_add(fail, 99, 2); /* past the last shard: counted in the last */
    mt_counter_add(allow, 1, 3);
    mt_counter_add(deny, 0, 1);
    struct mt_series *c1;
    CHECK_INT_EQ(mt_series_get(conns, NULL, &c1, &e), 0);
    mt_counter_add(c1, 0, 4);
    mt_gauge_add(a, 0, 3);
    mt_gauge_add(a, 1, -1);
    mt_histogram_observe(d1, 0, 0.0005);
    mt_histogram_observe(d1, 1, 0.001); /* on the bound: le is inclusive */
    mt_histogram_observe(d1, 2, 0.05);
    mt_histogram_observe(d1, 0, 3.0);
    mt_histogram_observe(d2, 0, NAN); /* counted in +Inf; the sum becomes NaN */

    char *page = render(r);
    const char *want =
        "# HELP meshtls_tls_handshakes_total TLS handshakes by result.\n"
        "# TYPE meshtls_tls_handshakes_total counter\n"
        "meshtls_tls_handshakes_total{result=\"success\"} 13\n"
        "meshtls_tls_handshakes_total{result=\"failure\"} 2\n"
        "# HELP meshtls_connections_total Accepted client connections.\n"
        "# TYPE meshtls_connections_total counter\n"
        "meshtls_connections_total 4\n"
        "# HELP meshtls_policy_decisions_total Identity policy decisions.\n"
        "# TYPE meshtls_policy_decisions_total counter\n"
        "meshtls_policy_decisions_total{decision=\"allow\",service=\"billing\"} 3\n"
        "meshtls_policy_decisions_total{decision=\"deny\",service=\"a\\\\b\\\"c\\nd\"} 1\n"
        "# HELP meshtls_connections_active Open client connections.\n"
        "# TYPE meshtls_connections_active gauge\n"
        "meshtls_connections_active 2\n"
        "# HELP meshtls_cert_expiry_days Days until our own certificate expires.\n"
        "# TYPE meshtls_cert_expiry_days gauge\n"
        "meshtls_cert_expiry_days 89.5\n"
        "# HELP meshtls_tls_handshake_duration_seconds Successful handshake time.\n"
        "# TYPE meshtls_tls_handshake_duration_seconds histogram\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"main\",le=\"0.001\"} 2\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"main\",le=\"0.01\"} 2\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"main\",le=\"0.1\"} 3\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"main\",le=\"2.5\"} 3\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"main\",le=\"+Inf\"} 4\n"
        "meshtls_tls_handshake_duration_seconds_sum{listener=\"main\"} 3.0515\n"
        "meshtls_tls_handshake_duration_seconds_count{listener=\"main\"} 4\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"status\",le=\"0.001\"} 0\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"status\",le=\"0.01\"} 0\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"status\",le=\"0.1\"} 0\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"status\",le=\"2.5\"} 0\n"
        "meshtls_tls_handshake_duration_seconds_bucket{listener=\"status\",le=\"+Inf\"} 1\n"
        "meshtls_tls_handshake_duration_seconds_sum{listener=\"status\"} NaN\n"
        "meshtls_tls_handshake_duration_seconds_count{listener=\"status\"} 1\n";
    CHECK_STR_EQ(page, want);
    free(page);

    /* the callback is asked at each scrape; gauges take set + shard deltas */
    cb_value = -INFINITY;
    mt_gauge_set(a, 10.25);
    CHECK(mt_series_value(a) == 12.25);
    CHECK(mt_series_value(ok) == 13);
    CHECK_INT_EQ(mt_histogram_count(d1), 4);
    page = render(r);
    CHECK(strstr(page, "\nmeshtls_cert_expiry_days -Inf\n") != NULL);
    CHECK(strstr(page, "\nmeshtls_connections_active 12.25\n") != NULL);
    free(page);
    mt_metrics_free(r);
}

static const struct {
    const char *help, *value; /* in */
    const char *help_out, *value_out;
} esc_cases[] = {
    {"plain", "plain", "plain", "plain"},
    {"back\\slash", "back\\slash", "back\\\\slash", "back\\\\slash"},
    {"two\nlines", "two\nlines", "two\\nlines", "two\\nlines"},
    {"say \"hi\"", "say \"hi\"", "say \"hi\"", "say \\\"hi\\\""}, /* HELP keeps quotes */
    {"", "", "", ""},
    {"utf-8 \xc3\xa9", "spiffe://td/svc/\xc3\xa9", "utf-8 \xc3\xa9", "spiffe://td/svc/\xc3\xa9"},
    {"\\\n\"", "\\\n\"", "\\\\\\n\"", "\\\\\\n\\\""},
};

TEST(escaping)
{
    for (size_t i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++) {
        struct mt_metrics *r = NULL;
        struct mt_family *f;
        struct mt_series *s;
        struct meshtls_err e = MESHTLS_ERR_INIT;
        CHECK_INT_EQ(mt_metrics_new(1, &r, &e), 0);
        CHECK_INT_EQ(mt_counter_new(r, "x_total", esc_cases[i].help, MT_LIST("l"), &f, &e), 0);
        CHECK_INT_EQ(mt_series_get(f, MT_LIST(esc_cases[i].value), &s, &e), 0);
        char want[512];
        snprintf(want, sizeof(want),
                 "# HELP x_total %s\n# TYPE x_total counter\nx_total{l=\"%s\"} 0\n",
                 esc_cases[i].help_out, esc_cases[i].value_out);
        char *page = render(r);
        CHECK_STR_EQ(page, want);
        free(page);
        mt_metrics_free(r);
    }
}

/* A callback may read other series: one family derived from another. */
static double derived(void *arg)
{
    return mt_series_value(arg);
}

TEST(derived_series)
{
    struct mt_metrics *r = NULL;
    struct mt_family *err_f, *val_f;
    struct mt_series *expired;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_metrics_new(2, &r, &e), 0);
    CHECK_INT_EQ(mt_counter_new(r, "hs_errors_total", "h", MT_LIST("reason"), &err_f, &e), 0);
    CHECK_INT_EQ(mt_counter_new(r, "validation_failures_total", "v", MT_LIST("reason"), &val_f, &e),
                 0);
    CHECK_INT_EQ(mt_series_get(err_f, MT_LIST("expired"), &expired, &e), 0);
    CHECK_INT_EQ(mt_series_fn(val_f, MT_LIST("expired"), derived, expired, &e), 0);
    mt_counter_add(expired, 1, 3);
    char *page = render(r);
    CHECK(strstr(page, "\nvalidation_failures_total{reason=\"expired\"} 3\n") != NULL);
    free(page);
    mt_metrics_free(r);
}

/* A collector: one sample per entry of a table that changes between scrapes (as the CRLs
 * of a reloaded snapshot), plus samples it must skip. */
struct crl_row {
    const char *issuer;
    double secs;
};
static struct crl_row crl_rows[4];
static size_t crl_nrows;

static void collect_crls(void *arg, struct mt_emit *e)
{
    (void)arg;
    for (size_t i = 0; i < crl_nrows; i++)
        mt_emit(e, MT_LIST(crl_rows[i].issuer), crl_rows[i].secs);
    CHECK_INT_EQ(mt_emit(e, NULL, 1), -1);              /* wrong number of label values */
    CHECK_INT_EQ(mt_emit(e, MT_LIST("a", "b"), 1), -1); /* likewise */
}

TEST(collected_series)
{
    struct mt_metrics *r = NULL;
    struct mt_family *f = NULL, *h = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    static const double b1[] = {1.0};
    CHECK_INT_EQ(mt_metrics_new(2, &r, &e), 0);
    CHECK_INT_EQ(mt_gauge_new(r, "crl_next_update_seconds", "s", MT_LIST("issuer"), &f, &e), 0);
    CHECK_INT_EQ(mt_family_collect(f, collect_crls, NULL, &e), 0);
    CHECK_INT_EQ(mt_family_collect(f, collect_crls, NULL, &e), MESHTLS_EINVAL); /* one only */
    CHECK_INT_EQ(mt_histogram_new(r, "h", "h", NULL, b1, 1, &h, &e), 0);
    CHECK_INT_EQ(mt_family_collect(h, collect_crls, NULL, &e), MESHTLS_EINVAL);
    crl_rows[0] = (struct crl_row){"CN=Root", 86400};
    crl_rows[1] = (struct crl_row){"CN=Int \"2\"", -5.5};
    crl_nrows = 2;
    char *page = render(r);
    CHECK(strstr(page, "# TYPE crl_next_update_seconds gauge\n"
                       "crl_next_update_seconds{issuer=\"CN=Root\"} 86400\n"
                       "crl_next_update_seconds{issuer=\"CN=Int \\\"2\\\"\"} -5.5\n") != NULL);
    free(page);
    /* the next scrape sees the table as it is now: a row gone is gone from the page */
    crl_rows[0] = (struct crl_row){"CN=Other", 10};
    crl_nrows = 1;
    page = render(r);
    CHECK(strstr(page, "crl_next_update_seconds{issuer=\"CN=Other\"} 10\n") != NULL);
    CHECK(strstr(page, "CN=Root") == NULL);
    free(page);
    /* bounded by the family's series bound */
    mt_family_set_max_series(f, 1);
    crl_rows[1] = (struct crl_row){"CN=Second", 20};
    crl_nrows = 2;
    page = render(r);
    CHECK(strstr(page, "CN=Other") != NULL && strstr(page, "CN=Second") == NULL);
    free(page);
    mt_metrics_free(r);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define WORKERS 4
#define ADDS 200000

static struct mt_series *t_counter, *t_gauge, *t_hist;

static void *adder(void *arg)
{
    /* workers 0..3 use their own shard; two more share shard 4 (the "other threads" one) */
    unsigned shard = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < ADDS; i++) {
        mt_counter_add(t_counter, shard, 1);
        mt_gauge_add(t_gauge, shard, i % 2 ? -1 : 2);
        mt_histogram_observe(t_hist, shard, i % 3 ? 0.5 : 5.0);
    }
    return NULL;
}

TEST(threads_exact_totals)
{
    struct mt_metrics *r = NULL;
    struct mt_family *c, *g, *h;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    const double bounds[] = {1.0};
    CHECK_INT_EQ(mt_metrics_new(WORKERS + 1, &r, &e), 0);
    CHECK_INT_EQ(mt_counter_new(r, "c_total", "c", NULL, &c, &e), 0);
    CHECK_INT_EQ(mt_gauge_new(r, "g", "g", NULL, &g, &e), 0);
    CHECK_INT_EQ(mt_histogram_new(r, "h", "h", NULL, bounds, 1, &h, &e), 0);
    CHECK_INT_EQ(mt_series_get(c, NULL, &t_counter, &e), 0);
    CHECK_INT_EQ(mt_series_get(g, NULL, &t_gauge, &e), 0);
    CHECK_INT_EQ(mt_series_get(h, NULL, &t_hist, &e), 0);
    pthread_t t[WORKERS + 2];
    for (uintptr_t i = 0; i < WORKERS + 2; i++)
        pthread_create(&t[i], NULL, adder, (void *)(i < WORKERS ? i : WORKERS));
    /* scrape while they add: must not crash, and totals only grow */
    double last = 0;
    for (int i = 0; i < 20; i++) {
        char *page = render(r);
        free(page);
        double v = mt_series_value(t_counter);
        CHECK(v >= last);
        last = v;
    }
    for (int i = 0; i < WORKERS + 2; i++)
        pthread_join(t[i], NULL);
    const uint64_t total = (uint64_t)(WORKERS + 2) * ADDS;
    CHECK(mt_series_value(t_counter) == (double)total);
    CHECK(mt_series_value(t_gauge) == (double)(total / 2)); /* +2 -1 per pair */
    CHECK_INT_EQ(mt_histogram_count(t_hist), total);
    char *page = render(r);
    char want[256];
    uint64_t big = (uint64_t)(WORKERS + 2) * ((ADDS + 2) / 3); /* i % 3 == 0 */
    snprintf(want, sizeof(want), "h_bucket{le=\"1\"} %llu\nh_bucket{le=\"+Inf\"} %llu\n",
             (unsigned long long)(total - big), (unsigned long long)total);
    CHECK(strstr(page, want) != NULL);
    snprintf(want, sizeof(want), "h_sum %.15g\nh_count %llu\n",
             0.5 * (double)(total - big) + 5.0 * (double)big, (unsigned long long)total);
    CHECK(strstr(page, want) != NULL);
    snprintf(want, sizeof(want), "c_total %llu\n", (unsigned long long)total);
    CHECK(strstr(page, want) != NULL);
    free(page);
    mt_metrics_free(r);
}

/* ---- bounds and refusals --------------------------------------------------------------------- */

TEST(bounds)
{
    struct mt_metrics *r = NULL;
    struct mt_family *f, *h;
    struct mt_series *s;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    CHECK_INT_EQ(mt_metrics_new(0, &r, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_metrics_new(2, &r, &e), 0);
    CHECK_INT_EQ(mt_metrics_shards(r), 2);

    CHECK_INT_EQ(mt_counter_new(r, "by_id_total", "h", MT_LIST("id"), &f, &e), 0);
    mt_family_set_max_series(f, 3);
    char v[16];
    for (int i = 0; i < 3; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        CHECK_INT_EQ(mt_series_get(f, MT_LIST(v), &s, &e), 0);
    }
    CHECK_INT_EQ(mt_series_get(f, MT_LIST("v0"), &s, &e), 0); /* existing: still found */
    CHECK_INT_EQ(mt_series_get(f, MT_LIST("v3"), &s, &e), MESHTLS_EINVAL);
    CHECK(strstr(e.msg, "by_id_total") && strstr(e.msg, "3 series"));
    /* the default bound */
    struct mt_family *g;
    CHECK_INT_EQ(mt_counter_new(r, "many_total", "h", MT_LIST("id"), &g, &e), 0);
    int made = 0;
    for (int i = 0; i < MT_SERIES_MAX + 10; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        if (mt_series_get(g, MT_LIST(v), &s, &e) == 0)
            made++;
    }
    CHECK_INT_EQ(made, MT_SERIES_MAX);

    /* wrong number of values, too long a value */
    CHECK_INT_EQ(mt_series_get(f, NULL, &s, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_series_get(f, MT_LIST("a", "b"), &s, &e), MESHTLS_EINVAL);
    char *longv = malloc(MT_LABEL_VALUE_MAX + 2);
    memset(longv, 'x', MT_LABEL_VALUE_MAX + 1);
    longv[MT_LABEL_VALUE_MAX + 1] = '\0';
    mt_family_set_max_series(f, 100);
    CHECK_INT_EQ(mt_series_get(f, MT_LIST(longv), &s, &e), MESHTLS_EINVAL);
    longv[MT_LABEL_VALUE_MAX] = '\0';
    CHECK_INT_EQ(mt_series_get(f, MT_LIST(longv), &s, &e), 0);
    free(longv);

    /* names, labels, duplicates */
    CHECK_INT_EQ(mt_counter_new(r, "by_id_total", "again", NULL, NULL, &e), MESHTLS_EEXIST);
    CHECK_INT_EQ(mt_counter_new(r, "9lives", "h", NULL, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "has-dash", "h", NULL, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "", "h", NULL, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "ns:ok_total", "h", NULL, NULL, &e), 0);
    CHECK_INT_EQ(mt_counter_new(r, "l1", "h", MT_LIST("a:b"), NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "l2", "h", MT_LIST("__x"), NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "l3", "h", MT_LIST("a", "a"), NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_counter_new(r, "l4", "h", MT_LIST("a", "b", "c", "d", "e", "f", "g", "h", "i"),
                                NULL, &e),
                 MESHTLS_EINVAL);

    /* histograms: bounds, "le" */
    const double good[] = {0.1, 1}, unsorted[] = {1, 0.1}, equal[] = {1, 1}, inf[] = {1, INFINITY};
    double many[MT_BUCKETS_MAX + 1];
    for (int i = 0; i <= MT_BUCKETS_MAX; i++)
        many[i] = i;
    CHECK_INT_EQ(mt_histogram_new(r, "h1", "h", MT_LIST("le"), good, 2, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h2", "h", NULL, unsorted, 2, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h3", "h", NULL, equal, 2, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h4", "h", NULL, inf, 2, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h5", "h", NULL, good, 0, NULL, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h6", "h", NULL, many, MT_BUCKETS_MAX + 1, NULL, &e),
                 MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_histogram_new(r, "h7", "h", NULL, many, MT_BUCKETS_MAX, &h, &e), 0);
    CHECK_INT_EQ(mt_counter_new(r, "le_ok_total", "h", MT_LIST("le"), NULL, &e), 0);

    /* callbacks: not on histograms, not twice; a call of the wrong type does nothing */
    double x = 1;
    CHECK_INT_EQ(mt_series_fn(h, NULL, cb, &x, &e), MESHTLS_EINVAL);
    CHECK_INT_EQ(mt_series_fn(f, MT_LIST("cb"), cb, &x, &e), 0);
    CHECK_INT_EQ(mt_series_fn(f, MT_LIST("cb"), cb, &x, &e), MESHTLS_EEXIST);
    CHECK_INT_EQ(mt_series_get(f, MT_LIST("cb"), &s, &e), MESHTLS_EEXIST);
    CHECK_INT_EQ(mt_series_get(f, MT_LIST("v1"), &s, &e), 0);
    mt_gauge_add(s, 0, 5);
    mt_histogram_observe(s, 0, 5);
    mt_gauge_set(s, 5);
    CHECK(mt_series_value(s) == 0);
    mt_metrics_free(r);
    mt_metrics_free(NULL);
}

int main(void)
{
    RUN(render_page);
    RUN(escaping);
    RUN(derived_series);
    RUN(collected_series);
    RUN(threads_exact_totals);
    RUN(bounds);
    return check_summary();
}
