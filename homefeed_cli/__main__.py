"""`python -m homefeed_cli ...` is `candidates ...`."""

import sys

from homefeed_cli.cli import main

sys.exit(main())
