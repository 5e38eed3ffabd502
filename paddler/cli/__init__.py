"""The ``paddler`` command line: one module per command group."""
