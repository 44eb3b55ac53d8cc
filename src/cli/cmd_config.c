/* cmd_config.c - placeholder until the subcommand lands. */
#include <stdio.h>

#include "cli.h"

int cmd_config(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "meshtls config: not built yet\n");
    return 2;
}
