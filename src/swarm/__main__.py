"""``python -m swarm``."""

from swarm.cli import main

raise SystemExit(main())
