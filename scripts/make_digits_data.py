"""Write the digits split that the book ships: vramlib/data/digits/digits_split_seed0.npz.

    python scripts/make_digits_data.py            # (re)write the file
    python scripts/make_digits_data.py --check    # exit 1 unless the committed file is what
                                                  # this script writes (byte for byte)

The only part of the book that needs scikit-learn (``pip install scikit-learn``, or the
``zoo-data`` extra of pyproject.toml): it takes scikit-learn's copy of the UCI "Optical
Recognition of Handwritten Digits" test set (``sklearn.datasets.load_digits``: 1,797 8×8
images, integer pixels 0..16, labels 0..9) and splits it exactly as the book always has —
``train_test_split(test_size=0.2, random_state=0, stratify=target)`` — then stores the four
arrays as uint8 (every pixel and label is an integer in 0..16, so nothing is rounded):
``vramlib.models.zoo.digits_data()`` turns them back into the same float32 tensors, bit
for bit.  The .npz is written deterministically (fixed zip timestamps, sorted members), so
the same scikit-learn data give the same bytes.  Source and licence:
vramlib/data/digits/README.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vramlib.models.zoo import DIGITS_SPLIT_PATH, DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION  # noqa: E402


def split_arrays(seed: int = DIGITS_SPLIT_SEED) -> dict[str, np.ndarray]:
    """The book's stratified 80/20 split of ``load_digits`` as uint8 arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=DIGITS_TEST_FRACTION,
                                          random_state=seed, stratify=d.target)
    out = {}
    for name, a in {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}.items():
        u = a.astype(np.uint8)
        assert np.array_equal(u, a) and int(u.max()) <= 16, f"{name} is not integers 0..16"
        out[name] = u
    return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (what ``np.load`` reads) with fixed timestamps: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[name], allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    ap.add_argument("--out", type=Path, default=DIGITS_SPLIT_PATH)
    args = ap.parse_args()
    data = npz_bytes(split_arrays())
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print(f"{args.out}: {'matches' if same else 'DIFFERS from'} scikit-learn's load_digits split")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
