"""The command line: `rnnkit <command>`; one module per command."""
