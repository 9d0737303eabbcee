"""``python -m owsbench`` = the ``owsbench`` command."""

from owsbench.cli import main

main()
