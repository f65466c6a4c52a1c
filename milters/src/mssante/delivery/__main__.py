import sys

from mssante.delivery.cli import main

sys.exit(main())
