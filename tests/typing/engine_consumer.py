"""Both engines as the server holds them, for `mypy --strict` only.

tests/unit/test_engine_protocol.py type-checks this file: a member missing from `Stylizer` or
`StylizerPool`, or one whose signature drifts from `styletx.protocol.Engine`, fails it.
"""

from __future__ import annotations

from styletx.engine import Stylizer
from styletx.pool import StylizerPool
from styletx.protocol import Engine


def engines(stylizer: Stylizer, pool: StylizerPool) -> list[Engine]:
    one: Engine = stylizer
    several: Engine = pool
    return [one, several]
