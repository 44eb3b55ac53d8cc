/* cmd_dev.c - placeholder until the subcommand lands. */
#include <stdio.h>

#include "cli.h"

int cmd_dev(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "meshtls dev: not built yet\n");
    return 2;
}
