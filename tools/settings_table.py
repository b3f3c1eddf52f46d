"""Rewrite the README's table of server settings from their declaration (server ops/settings.py).

The table sits between the `<!-- settings:start ... -->` and `<!-- settings:end -->` lines of
README.md; tests/unit/server/ops/test_config.py fails while it differs from what this writes.

Usage: .venv/bin/python tools/settings_table.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "server")]

from styletx_server.ops.settings import SETTINGS  # noqa: E402
from styletx_server.ops.settings_schema import markdown_table, splice  # noqa: E402

README = ROOT / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when the table is stale"
    )
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    fresh = splice(text, markdown_table(SETTINGS))
    if fresh == text:
        print("README.md: the table of settings is current")
        return 0
    if args.check:
        print("README.md: the table of settings is stale; run tools/settings_table.py")
        return 1
    README.write_text(fresh, encoding="utf-8")
    print(f"README.md: wrote the table of {len(SETTINGS)} settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
