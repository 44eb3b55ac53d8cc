#define _GNU_SOURCE
/*
 * loadgen.c - mTLS load generator for bench/run.sh.  OpenSSL only, loopback
 * only; every mode is bounded by a duration AND a count.
 *
 *   loadgen MODE HOST:PORT CERT KEY CA [options]
 *
 *   full    full mTLS handshakes/s: -t connections at a time (one thread each)
 *           connect, handshake with the client certificate, send 32 bytes,
 *           read the echo, close; for -d seconds or -n connections
 *   resume  the same, each connection resuming the TLS 1.3 session (PSK from
 *           the newest ticket) of the thread's previous connection
 *   rr      -c persistent connections (one epoll thread), -s byte messages
 *           (default 1024): send, wait for the whole echo, send again; rate
 *           and p50/p99/p999 latency over -d seconds
 *   up      one connection sends -m MiB to the backend ("SINK n"), which
 *           answers "OK" once all arrived: client->server MB/s
 *   down    one connection asks the backend for -m MiB ("SRC n"): server->client
 *   idle    open -k connections (-t threads opening), echo 8 bytes on each so
 *           the backend leg exists too, print "open=N", then hold them until
 *           stdin closes (or -d seconds, default 300)
 *
 *   options: -t THREADS (full/resume default 4, idle 2)  -d SECONDS (default 5)
 *            -n MAXCONNS (full/resume, default 10000000)  -c CONNS (rr, 64)
 *            -s BYTES (rr, 1024)  -m MIB (up/down, 256)  -k N (idle, 1000)
 *            -C TLS13SUITES (default TLS_AES_128_GCM_SHA256, the same for every server)
 *            -L CONNECT_ID  the router's protocol (docs/ROUTER.md), every mode: after the
 *                           handshake send "CONNECT_ID\n" and read the answer line; it must
 *                           be "OK" before the mode goes on (else the connection fails and
 *                           the first wrong answer goes to stderr)
 *            -A ANSWER      with -L (full/resume): expect a refusal instead, an answer line
 *                           starting with ANSWER (e.g. "ERROR: forbidden"); the connection
 *                           ends there and counts as one operation
 *
 * Output: one line of key=value pairs (ops, secs, rate, fails, ...) on stdout.  With -L the
 * full/resume line also has line_n, line_p50_us, line_p99_us, line_p999_us: the time from
 * writing the connect-id line to having the whole answer line, per connection.
 * The backend is bench/echo.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>

static struct sockaddr_in target;
static SSL_CTX *ctx;
static double duration = 5, t_start;
static unsigned long long max_ops = 10000000ULL;
static atomic_ullong ops, fails, reused, started;
static atomic_int stop_flag;
static char negotiated[96] = "none"; /* cipher/group of the first connection */
static atomic_int have_negotiated;

/* -L / -A: the router's connect-id line and the answer it must get */
static char line_out[300];
static size_t line_out_len;
static const char *line_expect = "OK";
static int line_refusal; /* -A given: the answer ends the connection */
static atomic_int line_complained;
static double *line_lat; /* line written -> answer read, seconds */
static size_t line_cap = 2000000;
static atomic_size_t line_n;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int time_up(void)
{
    return atomic_load(&stop_flag) || now() - t_start >= duration;
}

/* TLS 1.3 tickets arrive after the handshake: keep the newest one per thread. */
static __thread SSL_SESSION *tl_ticket;
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    SSL_SESSION_free(tl_ticket);
    tl_ticket = sess; /* the callback's reference is ours now */
    return 1;
}

static int cmp_dbl(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Send the connect-id line and read the answer (one line, bounded); 0 if it is the one
 * expected.  The socket's 10 s timeouts bound the wait. */
static int router_line(SSL *ssl)
{
    char ans[512];
    size_t n = 0;
    double t0 = now();
    if (SSL_write(ssl, line_out, (int)line_out_len) != (int)line_out_len)
        return -1;
    while (n + 1 < sizeof(ans) && (n == 0 || ans[n - 1] != '\n')) {
        int r = SSL_read(ssl, ans + n, 1); /* byte by byte: nothing after the line is ours */
        if (r <= 0)
            break;
        n++;
    }
    double t = now();
    ans[n] = 0;
    size_t want = strlen(line_expect);
    int ok = n > 0 && ans[n - 1] == '\n' &&
             (line_refusal ? strncmp(ans, line_expect, want) == 0 : strcmp(ans, "OK\n") == 0);
    if (!ok) {
        if (atomic_exchange(&line_complained, 1) == 0)
            fprintf(stderr, "loadgen: the answer to the connect-id line was \"%.*s\", not %s%s\n",
                    (int)(n && ans[n - 1] == '\n' ? n - 1 : n), ans, line_expect,
                    line_refusal ? "..." : "");
        return -1;
    }
    size_t i = atomic_fetch_add(&line_n, 1);
    if (i < line_cap)
        line_lat[i] = t - t0;
    return 0;
}

static SSL *dial(SSL_SESSION *sess)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&target, sizeof(target)) != 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        close(fd);
        return NULL;
    }
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
    if (atomic_exchange(&have_negotiated, 1) == 0) {
        int g = SSL_get_negotiated_group(ssl);
        snprintf(negotiated, sizeof(negotiated), "%s/%s", SSL_get_cipher_name(ssl),
                 g ? OBJ_nid2sn(g) : "?");
    }
    if (line_out_len && router_line(ssl) != 0) {
        int lfd = SSL_get_fd(ssl);
        SSL_free(ssl);
        close(lfd);
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

static int write_all(SSL *ssl, const char *p, size_t n)
{
    while (n > 0) {
        int w = SSL_write(ssl, p, n > (1u << 30) ? 1 << 30 : (int)n);
        if (w <= 0)
            return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

static int read_n(SSL *ssl, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, (int)(n - got));
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* ---- full / resume ------------------------------------------------------ */

static int resume_mode;

static void *conn_loop(void *arg)
{
    (void)arg;
    char msg[32], in[32];
    memset(msg, 'x', sizeof(msg));
    while (!time_up() && atomic_fetch_add(&started, 1) < max_ops) {
        SSL *ssl = dial(resume_mode ? tl_ticket : NULL);
        if (ssl && line_refusal) { /* the refusal was the whole exchange */
            atomic_fetch_add(&ops, 1);
            hangup(ssl);
            continue;
        }
        if (!ssl || write_all(ssl, msg, sizeof(msg)) || read_n(ssl, in, sizeof(in))) {
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

/* ---- rr: persistent connections, one epoll thread ----------------------- */

struct rrc {
    SSL *ssl;
    int fd;
    size_t sent, got;
    double t0;
};

static int run_rr(int conns, size_t msg_size)
{
    struct rrc *v = calloc((size_t)conns, sizeof(*v));
    char *msg = malloc(msg_size), *in = malloc(65536);
    size_t cap = 4000000, ns = 0;
    double *lat = malloc(sizeof(double) * cap);
    if (!v || !msg || !in || !lat)
        return 1;
    memset(msg, 'r', msg_size);
    int ep = epoll_create1(0), open_n = 0;
    for (int i = 0; i < conns && now() - t_start < 60; i++) {
        SSL *ssl = dial(NULL);
        if (!ssl) {
            atomic_fetch_add(&fails, 1);
            continue;
        }
        int fd = SSL_get_fd(ssl);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        v[open_n] = (struct rrc){.ssl = ssl, .fd = fd};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &v[open_n]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        open_n++;
    }
    t_start = now(); /* measure from the moment all connections are up */
    for (int i = 0; i < open_n; i++) {
        v[i].t0 = now();
        int w = SSL_write(v[i].ssl, msg, (int)msg_size); /* 1 KiB fits any socket buffer */
        if (w != (int)msg_size)
            atomic_fetch_add(&fails, 1);
    }
    struct epoll_event evs[256];
    while (!time_up() && ops < max_ops) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct rrc *c = evs[i].data.ptr;
            for (;;) {
                int r = SSL_read(c->ssl, in, 65536);
                if (r <= 0) {
                    int e = SSL_get_error(c->ssl, r);
                    if (e != SSL_ERROR_WANT_READ) {
                        atomic_fetch_add(&fails, 1);
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    }
                    ERR_clear_error();
                    break;
                }
                c->got += (size_t)r;
                if (c->got >= msg_size) {
                    double t = now();
                    if (ns < cap)
                        lat[ns++] = t - c->t0;
                    atomic_fetch_add(&ops, 1);
                    c->got = 0;
                    c->t0 = t;
                    if (time_up())
                        break;
                    if (SSL_write(c->ssl, msg, (int)msg_size) != (int)msg_size) {
                        atomic_fetch_add(&fails, 1);
                        ERR_clear_error();
                    }
                }
            }
        }
    }
    double secs = now() - t_start;
    qsort(lat, ns, sizeof(double), cmp_dbl);
    printf("ops=%llu secs=%.3f rate=%.1f p50_us=%.0f p99_us=%.0f p999_us=%.0f conns=%d "
           "fails=%llu tls=%s\n",
           (unsigned long long)ops, secs, (double)ops / secs, ns ? lat[ns / 2] * 1e6 : 0,
           ns ? lat[ns * 99 / 100] * 1e6 : 0, ns ? lat[ns * 999 / 1000] * 1e6 : 0, open_n,
           (unsigned long long)fails, negotiated);
    for (int i = 0; i < open_n; i++)
        hangup(v[i].ssl);
    return 0;
}

/* ---- up / down ---------------------------------------------------------- */

static int run_bulk(int up, unsigned long long bytes)
{
    SSL *ssl = dial(NULL);
    if (!ssl) {
        printf("bytes=0 secs=0 mbps=0 fails=1\n");
        return 1;
    }
    static char buf[65536];
    memset(buf, 'b', sizeof(buf));
    char cmd[64];
    int n = snprintf(cmd, sizeof(cmd), "%s %llu\n", up ? "SINK" : "SRC", bytes);
    double t0 = now();
    unsigned long long done = 0;
    int bad = write_all(ssl, cmd, (size_t)n) != 0;
    if (up) {
        while (!bad && done < bytes && now() - t0 < duration) {
            size_t k = bytes - done < sizeof(buf) ? (size_t)(bytes - done) : sizeof(buf);
            if (write_all(ssl, buf, k))
                bad = 1;
            else
                done += k;
        }
        char ok[3];
        if (!bad && done == bytes && read_n(ssl, ok, 3) != 0)
            bad = 1;
    } else {
        while (!bad && done < bytes && now() - t0 < duration) {
            int r = SSL_read(ssl, buf, sizeof(buf));
            if (r <= 0)
                bad = 1;
            else
                done += (unsigned long long)r;
        }
    }
    double secs = now() - t0;
    printf("bytes=%llu secs=%.3f mbps=%.1f complete=%d fails=%d tls=%s\n", done, secs,
           (double)done / secs / 1e6, done == bytes, bad, negotiated);
    /* a cut-short download leaves the backend sending: closing is enough */
    hangup(ssl);
    return 0;
}

/* ---- idle --------------------------------------------------------------- */

static SSL **idle_v;
static int idle_k, idle_threads;
static atomic_int idle_open;

static void *idle_opener(void *arg)
{
    long id = (long)arg;
    char msg[8] = "idle...", in[8];
    for (int i = (int)id; i < idle_k && now() - t_start < 240; i += idle_threads) {
        SSL *ssl = dial(NULL);
        if (ssl && write_all(ssl, msg, sizeof(msg)) == 0 && read_n(ssl, in, sizeof(in)) == 0) {
            idle_v[i] = ssl;
            atomic_fetch_add(&idle_open, 1);
        } else {
            atomic_fetch_add(&fails, 1);
            if (ssl)
                hangup(ssl);
        }
    }
    return NULL;
}

static int run_idle(int k, int threads)
{
    idle_k = k, idle_threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    idle_v = calloc((size_t)k, sizeof(*idle_v));
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* keep the holder small */
    pthread_t th[64];
    for (long i = 0; i < idle_threads; i++)
        pthread_create(&th[i], NULL, idle_opener, (void *)i);
    for (int i = 0; i < idle_threads; i++)
        pthread_join(th[i], NULL);
    printf("open=%d secs=%.3f fails=%llu\n", atomic_load(&idle_open), now() - t_start,
           (unsigned long long)fails);
    fflush(stdout);
    /* hold until run.sh closes our stdin, at most `duration` seconds */
    double hold_start = now();
    struct pollfd p = {.fd = 0, .events = POLLIN};
    char c;
    while (now() - hold_start < duration) {
        if (poll(&p, 1, 200) > 0 && read(0, &c, 1) <= 0)
            break;
    }
    for (int i = 0; i < k; i++)
        if (idle_v[i]) {
            close(SSL_get_fd(idle_v[i])); /* no close_notify: 9,000 of them take long */
            SSL_free(idle_v[i]);
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: loadgen full|resume|rr|up|down|idle HOST:PORT CERT KEY CA "
                        "[-t N] [-d S] [-n N] [-c N] [-s B] [-m MIB] [-k N] [-C SUITES] "
                        "[-L CONNECT_ID [-A ANSWER]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argv[1];
    int threads = -1, conns = 64, mib = 256, idle_n = 1000, msg_size = 1024;
    int dur_set = 0;
    const char *suites = "TLS_AES_128_GCM_SHA256";
    for (int i = 6; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "-t"))
            threads = atoi(v);
        else if (!strcmp(o, "-d"))
            duration = atof(v), dur_set = 1;
        else if (!strcmp(o, "-n"))
            max_ops = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-c"))
            conns = atoi(v);
        else if (!strcmp(o, "-s"))
            msg_size = atoi(v);
        else if (!strcmp(o, "-m"))
            mib = atoi(v);
        else if (!strcmp(o, "-k"))
            idle_n = atoi(v);
        else if (!strcmp(o, "-C"))
            suites = v;
        else if (!strcmp(o, "-L")) {
            size_t l = strlen(v);
            if (l < 1 || l + 1 >= sizeof(line_out) || strchr(v, '\n')) {
                fprintf(stderr, "loadgen: -L wants a connect id of 1..%zu bytes, no newline\n",
                        sizeof(line_out) - 2);
                return 2;
            }
            memcpy(line_out, v, l);
            line_out[l] = '\n';
            line_out_len = l + 1;
        } else if (!strcmp(o, "-A"))
            line_expect = v, line_refusal = 1;
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", o);
            return 2;
        }
    }
    if (msg_size < 1 || msg_size > 16384 || conns < 1 || conns > 4096 || mib < 1 || idle_n < 1 ||
        duration <= 0) {
        fprintf(stderr, "loadgen: option out of range\n");
        return 2;
    }
    if (line_refusal && (!line_out_len || (strcmp(mode, "full") && strcmp(mode, "resume")))) {
        fprintf(stderr, "loadgen: -A needs -L and mode full or resume\n");
        return 2;
    }
    if (line_out_len && !(line_lat = malloc(sizeof(double) * line_cap))) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    char host[64];
    const char *colon = strrchr(argv[2], ':');
    if (!colon || colon - argv[2] >= (long)sizeof(host)) {
        fprintf(stderr, "loadgen: HOST:PORT expected\n");
        return 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - argv[2]), argv[2]);
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1 ||
        (ntohl(target.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: loopback IPv4 addresses only\n");
        return 2;
    }

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    /* The same suite with every server (-C to change): AES-128-GCM, which meshtls prefers;
     * some servers prefer their own order over the client's.  X25519 key exchange.  Printed
     * as tls=CIPHER/GROUP. */
    if (!SSL_CTX_set_ciphersuites(ctx, suites)) {
        fprintf(stderr, "loadgen: bad -C %s\n", suites);
        return 2;
    }
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256");
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_session);

    t_start = now();
    if (!strcmp(mode, "full") || !strcmp(mode, "resume")) {
        resume_mode = !strcmp(mode, "resume");
        if (threads < 1)
            threads = 4;
        if (threads > 256)
            threads = 256;
        pthread_t th[256];
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, conn_loop, NULL);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        double secs = now() - t_start;
        printf("ops=%llu secs=%.3f rate=%.1f reused=%llu fails=%llu tls=%s",
               (unsigned long long)ops, secs, (double)ops / secs, (unsigned long long)reused,
               (unsigned long long)fails, negotiated);
        if (line_out_len) {
            size_t ln = atomic_load(&line_n) < line_cap ? atomic_load(&line_n) : line_cap;
            qsort(line_lat, ln, sizeof(double), cmp_dbl);
            printf(" line_n=%zu line_p50_us=%.1f line_p99_us=%.1f line_p999_us=%.1f", ln,
                   ln ? line_lat[ln / 2] * 1e6 : 0, ln ? line_lat[ln * 99 / 100] * 1e6 : 0,
                   ln ? line_lat[ln * 999 / 1000] * 1e6 : 0);
        }
        printf("\n");
    } else if (!strcmp(mode, "rr")) {
        return run_rr(conns, (size_t)msg_size);
    } else if (!strcmp(mode, "up") || !strcmp(mode, "down")) {
        if (!dur_set)
            duration = 60;
        return run_bulk(!strcmp(mode, "up"), (unsigned long long)mib << 20);
    } else if (!strcmp(mode, "idle")) {
        if (!dur_set)
            duration = 300;
        return run_idle(idle_n, threads < 1 ? 2 : threads);
    } else {
        fprintf(stderr, "loadgen: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
