/* cmd_cert.c - placeholder until the subcommand lands. */
#include <stdio.h>

#include "cli.h"

int cmd_cert(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "meshtls cert: not built yet\n");
    return 2;
}
