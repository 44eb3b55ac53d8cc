/*
 * loadgen.c - mTLS load generator for bench/run.sh (OpenSSL, threads,
 * blocking sockets; loopback only; every loop bounded by time).
 *
 *   loadgen MODE HOST:PORT CERT KEY CA [options]
 *     full    connections/s: connect, full mTLS handshake, 32-byte echo, close
 *     resume  the same, resuming the session of the thread's first connection
 *     rr      -c 64 persistent connections, 1 KiB request/response: rate, p50, p99
 *     bulk    one connection, -m MiB echoed through (both directions at once): MB/s
 *     idle    -n N connections opened, handshaken and held until stdin closes
 *   options: -t THREADS (full/resume, default 4)  -d SECONDS (default 5)
 *            -c CONNS (rr, default 64)  -m MIB (bulk, default 256)  -n N (idle)
 *
 * Prints one line of key=value pairs for run.sh.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static struct sockaddr_in target;
static SSL_CTX *ctx;
static double duration = 5;
static atomic_ullong ops, fails, reused;
static volatile int stop_flag;

/* TLS 1.3 tickets arrive after the handshake: keep the newest one per thread. */
static __thread SSL_SESSION *tl_ticket;

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    SSL_SESSION_free(tl_ticket);
    tl_ticket = sess; /* we keep the reference */
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static SSL *dial(SSL_SESSION *sess)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&target, sizeof(target)) != 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (sess)
        SSL_set_session(ssl, sess);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
        return NULL;
    }
    return ssl;
}

static void hangup(SSL *ssl)
{
    int fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

static int echo(SSL *ssl, const char *buf, int n)
{
    char in[65536];
    if (SSL_write(ssl, buf, n) != n)
        return -1;
    int got = 0;
    while (got < n) {
        int r = SSL_read(ssl, in, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

static void *conn_loop(void *arg)
{
    int resume = *(int *)arg;
    char msg[32];
    memset(msg, 'x', sizeof(msg));
    while (!stop_flag) {
        SSL *ssl = dial(resume ? tl_ticket : NULL);
        if (!ssl || echo(ssl, msg, sizeof(msg)) != 0) {
            atomic_fetch_add(&fails, 1);
            if (ssl)
                hangup(ssl);
            continue;
        }
        if (SSL_session_reused(ssl))
            atomic_fetch_add(&reused, 1);
        atomic_fetch_add(&ops, 1);
        hangup(ssl);
    }
    SSL_SESSION_free(tl_ticket);
    tl_ticket = NULL;
    return NULL;
}

#define MAX_SAMPLES 400000
struct rr_arg {
    double *lat;
    size_t n;
};

static void *rr_loop(void *arg)
{
    struct rr_arg *a = arg;
    char msg[1024];
    memset(msg, 'r', sizeof(msg));
    SSL *ssl = dial(NULL);
    if (!ssl) {
        atomic_fetch_add(&fails, 1);
        return NULL;
    }
    while (!stop_flag) {
        double t0 = now();
        if (echo(ssl, msg, sizeof(msg)) != 0) {
            atomic_fetch_add(&fails, 1);
            break;
        }
        if (a->n < MAX_SAMPLES)
            a->lat[a->n++] = now() - t0;
        atomic_fetch_add(&ops, 1);
    }
    hangup(ssl);
    return NULL;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static size_t bulk_total;
static void *bulk_reader(void *arg)
{
    SSL *ssl = arg;
    static char buf[65536];
    size_t got = 0;
    while (got < bulk_total) {
        int r = SSL_read(ssl, buf, sizeof(buf));
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    atomic_store(&ops, got);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: loadgen full|resume|rr|bulk|idle HOST:PORT CERT KEY CA [opts]\n");
        return 2;
    }
    const char *mode = argv[1];
    int threads = 4, conns = 64, mib = 256, idle_n = 1000;
    for (int i = 6; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-t"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-d"))
            duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-c"))
            conns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-m"))
            mib = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n"))
            idle_n = atoi(argv[i + 1]);
    }
    char host[64];
    const char *colon = strrchr(argv[2], ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - argv[2]), argv[2]);
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(colon + 1));
    inet_pton(AF_INET, host, &target.sin_addr);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_session);

    double t0 = now();
    if (!strcmp(mode, "full") || !strcmp(mode, "resume")) {
        int resume = !strcmp(mode, "resume");
        pthread_t th[256];
        if (threads > 256)
            threads = 256;
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, conn_loop, &resume);
        while (now() - t0 < duration)
            usleep(20000);
        stop_flag = 1;
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        double secs = now() - t0;
        printf("ops=%llu secs=%.2f rate=%.1f reused=%llu fails=%llu\n",
               (unsigned long long)ops, secs, (double)ops / secs, (unsigned long long)reused,
               (unsigned long long)fails);
    } else if (!strcmp(mode, "rr")) {
        pthread_t th[1024];
        struct rr_arg *a = calloc((size_t)conns, sizeof(*a));
        if (conns > 1024)
            conns = 1024;
        for (int i = 0; i < conns; i++) {
            a[i].lat = malloc(sizeof(double) * MAX_SAMPLES / 16);
            pthread_create(&th[i], NULL, rr_loop, &a[i]);
        }
        while (now() - t0 < duration)
            usleep(20000);
        stop_flag = 1;
        size_t total = 0;
        for (int i = 0; i < conns; i++) {
            pthread_join(th[i], NULL);
            total += a[i].n;
        }
        double secs = now() - t0, *all = malloc(sizeof(double) * (total + 1));
        size_t k = 0;
        for (int i = 0; i < conns; i++)
            for (size_t j = 0; j < a[i].n && j < MAX_SAMPLES / 16; j++)
                all[k++] = a[i].lat[j];
        qsort(all, k, sizeof(double), cmp);
        printf("ops=%llu secs=%.2f rate=%.1f p50_us=%.0f p99_us=%.0f fails=%llu\n",
               (unsigned long long)ops, secs, (double)ops / secs,
               k ? all[k / 2] * 1e6 : 0, k ? all[k * 99 / 100] * 1e6 : 0,
               (unsigned long long)fails);
    } else if (!strcmp(mode, "bulk")) {
        SSL *ssl = dial(NULL);
        if (!ssl)
            return 1;
        bulk_total = (size_t)mib << 20;
        pthread_t rd;
        pthread_create(&rd, NULL, bulk_reader, ssl);
        static char buf[16384];
        memset(buf, 'b', sizeof(buf));
        for (size_t sent = 0; sent < bulk_total && now() - t0 < 120; sent += sizeof(buf))
            if (SSL_write(ssl, buf, sizeof(buf)) <= 0)
                break;
        pthread_join(rd, NULL);
        double secs = now() - t0;
        printf("bytes=%llu secs=%.2f mbps=%.1f\n", (unsigned long long)ops, secs,
               (double)ops / secs / 1e6);
        hangup(ssl);
    } else if (!strcmp(mode, "idle")) {
        SSL **v = calloc((size_t)idle_n, sizeof(*v));
        int open_n = 0;
        char msg[8] = "idle...";
        for (int i = 0; i < idle_n && now() - t0 < 120; i++) {
            v[i] = dial(NULL);
            if (v[i] && echo(v[i], msg, sizeof(msg)) == 0)
                open_n++;
        }
        printf("open=%d\n", open_n);
        fflush(stdout);
        char c;
        while (read(0, &c, 1) > 0) /* hold until run.sh closes our stdin */
            ;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
