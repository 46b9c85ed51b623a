import sys

from modal_burst.cli import main

sys.exit(main())
