/*
 * router_keys.h - the `modes` bits of the router.* keys (router_config_keys.c): which of
 * the two commands takes a key's flag.  Bits 16-17 (include/meshtls/config.h lists whose
 * bits are whose: `meshtls config` registers every table at once).
 */
#ifndef MESHTLS_ROUTER_KEYS_H
#define MESHTLS_ROUTER_KEYS_H

#define RT_KEY_SERVE (1u << 16) /* meshtls proxy router */
#define RT_KEY_DATA (1u << 17)  /* meshtls router (the data commands) */

#endif
