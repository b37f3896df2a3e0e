"""`python -m analysis report ...`."""

import sys

from study.secrets import mask_process_output

mask_process_output()  # before anything imports MLflow or sets up logging

from analysis.cli import main  # noqa: E402

sys.exit(main())
