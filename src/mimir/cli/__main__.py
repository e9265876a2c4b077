"""`python -m mimir.cli`: the same command line as `mimir`."""

import sys

from mimir.cli import main

sys.exit(main())
