"""`python -m mailcase`: the same as the `mailcase` console script."""

from mailcase.cli import main

raise SystemExit(main())
