"""``python -m robot``: the same entry point as the installed ``robot`` command.

Nothing but the call to :func:`robot.cli.main` belongs here.
"""

from __future__ import annotations

from robot.cli import main

if __name__ == "__main__":
    main()
