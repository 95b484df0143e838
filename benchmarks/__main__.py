"""`python -m benchmarks ...` (from the repository root) is `jaxnas bench ...`."""

import sys

from jaxnas.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
