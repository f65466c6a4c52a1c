"""MSSanté operator appliance: Python side (trust list, milter, journal)."""

__version__ = "0.1.0"
