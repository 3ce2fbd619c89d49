"""Convert recorded result files of schema version 0 (before vramlib.core.records.Record) to
the current schema, in place.  Re-runnable: files already at the current version are left
as they are.

    python scripts/migrate_records.py [FILE_OR_FOLDER ...]   (default: vramlib/data/records)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vramlib.core.records import SCHEMA_VERSION, migrate_v0  # noqa: E402


def migrate_file(path: Path) -> bool:
    """Migrate ``path`` in place; ``False`` if it already has the current schema."""
    data = json.loads(path.read_text())
    if data.get("schema_version") == SCHEMA_VERSION:
        return False
    rec = migrate_v0(path.stem, data)
    path.write_text(json.dumps(rec.to_dict(), indent=1, default=str) + "\n")
    return True


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [ROOT / "vramlib" / "data" / "records"]
    files = sorted(f for t in targets for f in ([t] if t.is_file() else t.glob("*.json")))
    for f in files:
        print(f"{'migrated' if migrate_file(f) else 'current '}  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
