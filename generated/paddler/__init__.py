"""Only for type checkers: paddler.v1 is installed from generated/paddler/v1."""
