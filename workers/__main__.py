"""`python -m workers full|status|resume|enqueue`."""

import sys

from workers.cli import main

sys.exit(main())
