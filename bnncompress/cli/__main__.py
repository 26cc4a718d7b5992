"""``python -m bnncompress.cli``: the command line."""

from . import main

main()
