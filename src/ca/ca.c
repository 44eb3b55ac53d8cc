/* placeholder */
#include "ca.h"
int ca_placeholder(void);
int ca_placeholder(void) { return 0; }
