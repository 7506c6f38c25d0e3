"""`python -m kbn` runs the kbn command line."""

import sys

from .cli import main

sys.exit(main())
