"""``python -m agenticflow``: the same as the ``agenticflow`` command."""

from agenticflow.cli import main

main()
