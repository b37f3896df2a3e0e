"""`python -m study search|worker|reconcile ...`."""

import sys

from study.secrets import mask_process_output

mask_process_output()  # before anything imports MLflow or sets up logging

from study.cli import main  # noqa: E402

sys.exit(main())
