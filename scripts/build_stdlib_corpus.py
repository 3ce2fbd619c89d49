"""Rebuild the LLM-scale corpus snapshot from a CPython 3.11 ``Lib/`` folder.

    python scripts/build_stdlib_corpus.py [LIB_DIR]

Writes ``vramlib/data/corpus/cpython311_stdlib.txt.gz`` (gzip level 9, mtime 0, so the bytes
are reproducible) and its manifest ``cpython311_stdlib.json``.  The shipped snapshot was
built from CPython 3.11.7; another 3.11.x gives slightly different bytes (a new SHA-256).
"""

from __future__ import annotations

import gzip
import json
import platform
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib.models import stdlib_lm as S  # noqa: E402


def main() -> None:
    lib = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sysconfig.get_paths()["stdlib"])
    text, manifest = S.build_stdlib_corpus(lib)
    manifest = {"python": platform.python_version(), **manifest}
    S.CORPUS_PATH.parent.mkdir(parents=True, exist_ok=True)
    S.CORPUS_PATH.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
    S.MANIFEST_PATH.write_text(json.dumps(manifest, indent=0) + "\n")
    print(f"{len(manifest['files'])} files, {len(text):,} bytes, "
          f"{S.CORPUS_PATH.stat().st_size:,} bytes gzipped, sha256 {manifest['sha256']}")


if __name__ == "__main__":
    main()
