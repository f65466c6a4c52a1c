"""``python3 -m mssante.trustlist``: the ``mssante-trustlist`` command."""

import sys

from mssante.trustlist.cli import main

sys.exit(main())
