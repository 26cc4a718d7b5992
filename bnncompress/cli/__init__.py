"""The ``bnncompress`` command line: argument parsing and printing over the Python API.

``app`` is the typer application (commands in :mod:`.archives` and :mod:`.embeddings`),
``main`` the console-script entry point.
"""

from . import archives, embeddings  # noqa: F401  (the commands register themselves on the app)
from .app import app, main

__all__ = ["app", "main"]
