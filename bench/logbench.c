/*
 * logbench.c - what one log line costs: formatting alone (a sink that drops the text),
 * formatting plus the write(2) to /dev/null, to a file, and to a pipe drained by another
 * thread (what a container runtime gives stderr), in text and JSON; and the bare write(2) of
 * a line of the same size.  Numbers for docs/PERFORMANCE.md ("Log lines"); nothing asserted.
 *
 *   make -C bench OUT=../build-bench/bench MESHTLS_BUILD=../build   (then)
 *   ../build-bench/bench/logbench [lines]
 *
 * The event is the proxy's `close` line with the fields it carries today.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "meshtls/log.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void drop(int level, const char *msg, void *arg)
{
    (void)level;
    *(size_t *)arg += strlen(msg);
}

static void close_line(unsigned long long i)
{
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "close", MESHTLS_LF_S("client", "127.0.0.1:51236"),
                      MESHTLS_LF_S("id", "spiffe://example.org/svc/orders"),
                      MESHTLS_LF_S("serial", "9a3f5c2e7b1d4e6f8a0b2c4d6e8f0a1b"),
                      MESHTLS_LF_S("decision", "allow"), MESHTLS_LF_U("conn", i),
                      MESHTLS_LF_U("bytes_up", 1024), MESHTLS_LF_U("bytes_down", 1024),
                      MESHTLS_LF_D("duration_ms", 3.2), MESHTLS_LF_S("reason", "done"));
}

static void *drain(void *arg)
{
    int fd = *(int *)arg;
    char buf[65536];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

/* ns per line of close_line() with stderr on `fd` (or a dropping sink when fd < 0). */
static double run(int fd, int json, long n)
{
    size_t bytes = 0;
    int saved = dup(STDERR_FILENO);
    meshtls_log_set_json(json);
    if (fd < 0)
        meshtls_log_set_sink(drop, &bytes);
    else
        dup2(fd, STDERR_FILENO);
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        close_line((unsigned long long)i);
    double t = (now_ns() - t0) / (double)n;
    meshtls_log_set_sink(NULL, NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    return t;
}

/* ns per bare write(2) of a 240-byte line to `fd`. */
static double bare_write(int fd, long n)
{
    char line[240];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\n';
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (write(fd, line, sizeof(line)) < 0)
            return -1;
    return (now_ns() - t0) / (double)n;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    if (n <= 0 || n > 100000000)
        n = 200000;
    char path[] = "/tmp/logbench.XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    int devnull = open("/dev/null", O_WRONLY);
    int p[2];
    if (file < 0 || devnull < 0 || pipe(p) != 0)
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, drain, &p[0]);
    printf("%-28s %10s %10s\n", "ns per line", "text", "json");
    printf("%-28s %10.0f %10s\n", "format only (text sink)", run(-1, 0, n), "-");
    printf("%-28s %10.0f %10.0f\n", "format + write /dev/null", run(devnull, 0, n),
           run(devnull, 1, n));
    printf("%-28s %10.0f %10.0f\n", "format + write file", run(file, 0, n), run(file, 1, n));
    printf("%-28s %10.0f %10.0f\n", "format + write pipe", run(p[1], 0, n), run(p[1], 1, n));
    printf("%-28s %10.0f %10.0f %10.0f\n", "bare write(2): null/file/pipe", bare_write(devnull, n),
           bare_write(file, n), bare_write(p[1], n));
    close(p[1]);
    pthread_join(t, NULL);
    return 0;
}
