"""The demo (``nox -s demo``): 100 async tasks log to JSON files, which are shipped
to a local folder. The code lives in ``aiologship/cli/demo.py`` so that the installed
``aiologship demo`` command runs the same thing; read it there."""

import sys

from aiologship.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
