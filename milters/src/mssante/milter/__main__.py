"""``python3 -m mssante.milter`` = ``mssante-milter``."""

import sys

from mssante.milter.cli import main

sys.exit(main())
