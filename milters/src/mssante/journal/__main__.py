import sys

from mssante.journal.cli import main

sys.exit(main())
