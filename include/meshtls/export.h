/* meshtls/export.h - symbol visibility of the public API. */
#ifndef MESHTLS_EXPORT_H
#define MESHTLS_EXPORT_H

#if defined(MESHTLS_BUILDING) && defined(__GNUC__)
#define MESHTLS_API __attribute__((visibility("default")))
#else
#define MESHTLS_API
#endif

#endif
