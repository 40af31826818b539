"""``python -m engine`` is the ``tailormail`` command."""

from engine.cli import main

main()
