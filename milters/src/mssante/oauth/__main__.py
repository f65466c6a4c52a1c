"""``python3 -m mssante.oauth``: the local introspection server (see ``mssante.oauth.introspect``)."""

import sys

from mssante.oauth.introspect import main

sys.exit(main())
