"""``python -m engine`` is the ``tailormail`` command."""

from engine.cli.commands import main

main()
