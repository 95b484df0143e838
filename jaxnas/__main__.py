"""`python -m jaxnas` runs the command line."""

import sys

from jaxnas.cli import main

sys.exit(main())
