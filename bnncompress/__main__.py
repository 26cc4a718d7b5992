"""``python -m bnncompress``: the command line, as the ``bnncompress`` console script."""

from .cli import main

main()
