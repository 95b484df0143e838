"""`python -m jaxnas.bench ...` is `jaxnas bench ...` (see runner.py)."""

import sys

from jaxnas.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
