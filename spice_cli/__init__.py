"""The ``spice`` command line."""
