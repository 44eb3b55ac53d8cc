/*
 * addr.c - "host:port" text to socket addresses and back.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "net.h"

int mt_resolve(const char *hostport, int passive, struct sockaddr_storage *out, socklen_t *len,
               struct meshtls_err *err)
{
    char host[256];
    const char *port, *h = hostport;
    size_t hl;
    if (!hostport || !*hostport)
        return meshtls_err_set(err, MESHTLS_EINVAL, "missing address (expected HOST:PORT)");
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || rb[1] != ':')
            return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected [IPv6]:PORT",
                                   hostport);
        hl = (size_t)(rb - h - 1);
        h++;
        port = rb + 2;
    } else {
        const char *colon = strrchr(h, ':');
        if (!colon)
            return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected HOST:PORT",
                                   hostport);
        hl = (size_t)(colon - h);
        port = colon + 1;
    }
    if (hl >= sizeof(host) || !*port)
        return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': expected HOST:PORT", hostport);
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0},
                    *res = NULL;
    int g = getaddrinfo(hl ? host : NULL, port, &hints, &res);
    if (g != 0)
        return meshtls_err_set(err, MESHTLS_EINVAL, "address '%s': %s", hostport, gai_strerror(g));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void mt_addr_str(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(buf, cap, "%s:%d", ip, ntohs(s->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(buf, cap, "[%s]:%d", ip, ntohs(s->sin6_port));
    } else {
        snprintf(buf, cap, "?");
    }
}

int mt_is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}
