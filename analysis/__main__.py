"""`python -m analysis report ...`."""

import sys

from analysis.cli import main

sys.exit(main())
