"""`python3 -m mssante.lab`: the built-in lab (docs/lab.md)."""

import sys

from mssante.lab.cli import main

sys.exit(main())
