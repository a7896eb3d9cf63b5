"""``python -m openmrt``: the same as the ``openmrt`` command."""

from openmrt.cli import main

raise SystemExit(main())
