"""The local web page of ``r3l serve``."""
