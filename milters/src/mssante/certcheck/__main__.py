"""``python3 -m mssante.certcheck``."""

import sys

from mssante.certcheck.cli import main

sys.exit(main())
