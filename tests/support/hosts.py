"""Test hosts: the product's lab hosts (mssante.lab.hosts), under the names the tests use.

``HostNetwork.create()`` makes a bridge with a random tag and 10.x.y.0/24; ``add_host(name)`` a
``TestHost`` with its own network, mount and UTS namespaces under a fresh /var/tmp directory,
removed by ``destroy()`` (unless MSSANTE_KEEP_TEST_DIRS is set). See mssante/lab/hosts.py.
"""

from __future__ import annotations

from mssante.lab.hosts import OVERLAYS, HostNetwork
from mssante.lab.hosts import Host as TestHost

__all__ = ["OVERLAYS", "HostNetwork", "TestHost"]
