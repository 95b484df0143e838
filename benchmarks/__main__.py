"""`python -m benchmarks ...` is `jaxnas bench ...` (see benchmarks/runner.py)."""

import sys

from benchmarks.runner import main

if __name__ == "__main__":
    sys.exit(main())
