"""`python -m styletx` runs the command line."""

import sys

from styletx.cli import main

sys.exit(main())
