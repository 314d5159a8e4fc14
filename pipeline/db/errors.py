"""Which exceptions mean our own database dropped out (down, restarting, a connection cut).

Its own module because it needs SQLAlchemy: `pipeline.errors` re-exports the tuple on first
use, so importing the error taxonomy stays light.
"""

from __future__ import annotations

import sqlalchemy.exc

# Not the work's fault: worth another try once the database is back.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)
