/* meshtls/config.h - placeholder; replaced by the config module. */
#ifndef MESHTLS_CONFIG_H
#define MESHTLS_CONFIG_H
#endif
