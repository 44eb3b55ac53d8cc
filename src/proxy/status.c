/*
 * status.c - the status listener: /healthz, /readyz and /metrics over
 * plain HTTP/1.1, on loopback by default.
 *
 * One thread, one request per connection, a 2-second read deadline and an
 * 8 KiB cap on the request head: it is for probes and Prometheus, not for
 * traffic.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "meshtls/log.h"
#include "proxy.h"

#define REQ_MAX 8192
#define BODY_MAX (64 * 1024)

static int status_fd = -1;
static atomic_int status_stop;

static void respond(int fd, int code, const char *reason, const char *ctype, const char *body,
                    size_t blen)
{
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      code, reason, ctype, blen);
    if (hl > 0 && send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl)
        send(fd, body, blen, MSG_NOSIGNAL);
}

/* Our certificate is still valid? */
static int cert_valid(void)
{
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    int ok = s && s->ctx && s->not_after > (int64_t)time(NULL);
    mt_snap_release(s);
    return ok;
}

static void handle(int fd)
{
    char req[REQ_MAX + 1];
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < REQ_MAX && !memmem(req, got, "\r\n\r\n", 4)) {
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t n = recv(fd, req + got, REQ_MAX - got, 0);
        if (n <= 0)
            return;
        got += (size_t)n;
    }
    req[got] = '\0';
    if (!memmem(req, got, "\r\n\r\n", 4)) {
        respond(fd, 431, "Request Header Fields Too Large", "text/plain", "too large\n", 10);
        return;
    }
    char method[8], path[256];
    if (sscanf(req, "%7s %255s", method, path) != 2 || strcmp(method, "GET") != 0) {
        respond(fd, 405, "Method Not Allowed", "text/plain", "GET only\n", 9);
        return;
    }
    char *q = strchr(path, '?');
    if (q)
        *q = '\0';
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz")) {
        int ok = atomic_load(&px_metrics.listening) && cert_valid();
        const char *b = ok ? "ok\n" : "not ready: not listening or certificate expired\n";
        respond(fd, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "text/plain", b, strlen(b));
    } else if (!strcmp(path, "/metrics")) {
        char *body = malloc(BODY_MAX);
        if (!body) {
            respond(fd, 500, "Internal Server Error", "text/plain", "oom\n", 4);
            return;
        }
        size_t n = px_metrics_render(body, BODY_MAX);
        respond(fd, 200, "OK", "text/plain; version=0.0.4", body, n);
        free(body);
    } else {
        respond(fd, 404, "Not Found", "text/plain", "try /healthz, /readyz or /metrics\n", 34);
    }
}

static void *status_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&status_stop)) {
        struct pollfd p = {.fd = status_fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept4(status_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        handle(fd);
        close(fd);
    }
    return NULL;
}

int px_status_start(const char *addr, pthread_t *th, struct meshtls_err *err)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    int rc, one = 1;
    if ((rc = mt_resolve(addr, 1, &sa, &sl, err)) != 0)
        return meshtls_err_set(err, rc, "--status: %s", err ? err->msg : "");
    status_fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(status_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (status_fd < 0 || bind(status_fd, (struct sockaddr *)&sa, sl) != 0 ||
        listen(status_fd, 64) != 0)
        return meshtls_err_set(err, MESHTLS_EIO, "--status %s: %s", addr, strerror(errno));
    sl = sizeof(sa);
    getsockname(status_fd, (struct sockaddr *)&sa, &sl);
    char ip[64] = "";
    int port = 0;
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (void *)&sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else {
        struct sockaddr_in6 *s6 = (void *)&sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    printf("status on %s%s%s:%d\n", sa.ss_family == AF_INET6 ? "[" : "", ip,
           sa.ss_family == AF_INET6 ? "]" : "", port);
    fflush(stdout);
    if (pthread_create(th, NULL, status_main, NULL) != 0)
        return meshtls_err_set(err, MESHTLS_EIO, "cannot start the status thread");
    return 0;
}

void px_status_stop(pthread_t th)
{
    atomic_store(&status_stop, 1);
    /* the thread polls with a 200 ms timeout and serves one request at a time: bounded */
    pthread_join(th, NULL);
    close(status_fd);
    status_fd = -1;
}
