#define _GNU_SOURCE
/*
 * echo.c - the benchmark's plaintext backend: one thread, epoll, 127.0.0.1,
 * port 0 (or argv[1]).  Prints "listening on 127.0.0.1:PORT" when ready.
 * Every server under test forwards to the same instance.
 *
 * By default a connection is an echo.  If the first bytes a connection sends
 * are a command line, it becomes one direction of a bulk transfer:
 *   "SINK <bytes>\n"  read and discard <bytes>, then answer "OK\n"   (upload)
 *   "SRC <bytes>\n"   send <bytes> of data                          (download)
 * Sockets are non-blocking; a connection whose peer is slow keeps its pending
 * output and waits for EPOLLOUT, so one slow peer never stalls the others.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ECHO, SINK, SRC };

struct conn {
    int fd, mode, first;
    unsigned long long left; /* SINK: bytes still to read; SRC: bytes still to send */
    char *pend;              /* echo output not yet written */
    size_t pend_off, pend_len;
};

static int ep;
static char buf[65536], src_buf[65536];

static void drop(struct conn *c)
{
    close(c->fd);
    free(c->pend);
    free(c);
}

static void want_out(struct conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* @return 0 all written (or nothing to write), 1 blocked, -1 error */
static int flush(struct conn *c)
{
    if (c->mode == SRC) {
        while (c->left > 0) {
            size_t n = c->left < sizeof(src_buf) ? (size_t)c->left : sizeof(src_buf);
            ssize_t w = write(c->fd, src_buf, n);
            if (w < 0)
                return errno == EAGAIN ? 1 : -1;
            c->left -= (unsigned long long)w;
        }
        c->mode = ECHO;
    }
    while (c->pend_off < c->pend_len) {
        ssize_t w = write(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off);
        if (w < 0)
            return errno == EAGAIN ? 1 : -1;
        c->pend_off += (size_t)w;
    }
    c->pend_off = c->pend_len = 0;
    return 0;
}

static int queue(struct conn *c, const char *p, size_t n)
{
    if (c->pend_len == 0) { /* fast path: write straight away */
        ssize_t w = write(c->fd, p, n);
        if (w == (ssize_t)n)
            return 0;
        if (w < 0 && errno != EAGAIN)
            return -1;
        if (w > 0)
            p += w, n -= (size_t)w;
    }
    char *np = realloc(c->pend, c->pend_len + n);
    if (!np)
        return -1;
    memcpy(np + c->pend_len, p, n);
    c->pend = np;
    c->pend_len += n;
    return 1;
}

static void on_readable(struct conn *c)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            drop(c);
            return;
        }
        if (r < 0)
            return;
        char *p = buf;
        size_t n = (size_t)r;
        if (c->first) {
            c->first = 0;
            unsigned long long v;
            char *nl = memchr(buf, '\n', n);
            if (nl && sscanf(buf, "SINK %llu", &v) == 1) {
                c->mode = SINK, c->left = v;
                n -= (size_t)(nl + 1 - buf), p = nl + 1;
            } else if (nl && sscanf(buf, "SRC %llu", &v) == 1) {
                c->mode = SRC, c->left = v;
                int f = flush(c);
                if (f < 0) {
                    drop(c);
                    return;
                }
                if (f)
                    want_out(c, 1);
                continue;
            }
        }
        if (c->mode == SINK) {
            c->left = n >= c->left ? 0 : c->left - n;
            if (c->left == 0) {
                c->mode = ECHO;
                if (queue(c, "OK\n", 3) < 0) {
                    drop(c);
                    return;
                }
            }
            continue;
        }
        if (c->mode == SRC) /* still sending: input is discarded */
            continue;
        int q = queue(c, p, n);
        if (q < 0) {
            drop(c);
            return;
        }
        if (q > 0) {
            want_out(c, 1);
            return; /* read more once the peer drains */
        }
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    memset(src_buf, 's', sizeof(src_buf));
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(argc > 1 ? (unsigned short)atoi(argv[1]) : 0)};
    socklen_t sl = sizeof(sa);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 4096) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("echo");
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct conn *nc = calloc(1, sizeof(*nc));
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd, nc->first = 1;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                int f = flush(c);
                if (f < 0) {
                    drop(c);
                    continue;
                }
                if (f)
                    continue;
                want_out(c, 0);
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
    }
}
