"""Exit codes of every ``aiologship`` command."""

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # the copy did not complete: files pending or failing, destination down
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_ABORTED = 130  # aborted by a second Ctrl-C
