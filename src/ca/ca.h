/* ca.h - placeholder; replaced by the CA module. */
#ifndef MESHTLS_CA_H
#define MESHTLS_CA_H
#endif
