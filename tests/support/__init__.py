"""Helpers behind the fixtures of tests/conftest.py: real servers under temporary directories."""
