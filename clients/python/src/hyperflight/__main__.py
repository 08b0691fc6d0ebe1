"""``python -m hyperflight``: the ``hyperflight`` command (:mod:`hyperflight.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
