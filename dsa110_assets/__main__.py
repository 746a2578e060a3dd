"""``python -m dsa110_assets`` is the ``dsa110`` command."""

from dsa110_assets.cli import main

raise SystemExit(main())
