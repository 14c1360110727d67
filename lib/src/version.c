/*
 * version.c -- the version of the library itself, for programs that load it dynamically and
 * may have been compiled against another header (ML_VERSION is the header's).
 */
#include "maskloss.h"

const char *ml_version(void)
{
    return ML_VERSION;
}
