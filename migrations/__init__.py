"""The Alembic environment and revisions that bring a database to the schema in robot.schema.

A top-level directory of the source tree, installed with the robot as the ``migrations``
package so that ``robot run`` and ``robot db upgrade`` upgrade a database from a wheel.
:mod:`robot.migrate` finds it through :data:`ROBOT_MIGRATIONS` (so that an unrelated
``migrations`` package earlier on the path is refused, never run). Nothing here is imported
at run time except to find the directory; Alembic loads ``env.py`` and the revisions itself.
"""

from __future__ import annotations

#: Marks this package as the robot's own migrations (checked by robot.migrate).
ROBOT_MIGRATIONS = True
