/* cmd_ca.c - placeholder until the subcommand lands. */
#include <stdio.h>

#include "cli.h"

int cmd_ca(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "meshtls ca: not built yet\n");
    return 2;
}
