"""A milter that accepts everything: a live milter for tests that are not about the milter's decisions.

Run: ``python3 -m tests.support.noop_milter unix:/path/to/socket``. Defines ``data()`` so that an inet
socket does not stall (see the foundation notes), and nothing else: every step continues.
"""

from __future__ import annotations

import sys

import Milter


class Noop(Milter.Base):  # type: ignore[misc]
    def data(self) -> int:
        return int(Milter.CONTINUE)


def main() -> None:
    Milter.factory = Noop
    Milter.runmilter("noop", sys.argv[1], timeout=60)


if __name__ == "__main__":
    main()
