import sys

from mssante.revocation.cli import main

sys.exit(main())
