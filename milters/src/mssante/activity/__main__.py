"""``python3 -m mssante.activity``: see ``mssante.activity.cli``."""

import sys

from mssante.activity.cli import main

sys.exit(main())
