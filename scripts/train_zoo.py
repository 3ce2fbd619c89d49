"""Train the book's model zoo (Part II) and write the checkpoints shipped in vramlib/data/checkpoints.

    python scripts/train_zoo.py                 # both models, the shipped configuration
    python scripts/train_zoo.py --only lm --lm-steps 200   # a quick rehearsal
    python scripts/train_zoo.py --refresh-corpus           # re-snapshot pydoc_data.topics

Seeded: the same torch build on the same CPU reproduces the same state dict.  On a 2-core CPU
the language model takes about 5 minutes (0.4 s a step on one thread) and the classifier a few seconds.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import seed_everything  # noqa: E402
from vramlib.models import zoo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["lm", "digits"], default=None)
    ap.add_argument("--lm-steps", type=int, default=800)
    ap.add_argument("--lm-lr", type=float, default=3e-3)
    ap.add_argument("--lm-batch", type=int, default=32)
    ap.add_argument("--digits-epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refresh-corpus", action="store_true",
                    help="rewrite the corpus snapshot from this interpreter's pydoc_data.topics")
    ap.add_argument("--out", type=Path, default=zoo.CHECKPOINT_DIR)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shipped checkpoints used 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.refresh_corpus or not zoo.CORPUS_PATH.exists():
        zoo.CORPUS_PATH.parent.mkdir(parents=True, exist_ok=True)
        text = zoo.build_corpus_from_python().encode("utf-8")
        with gzip.GzipFile(zoo.CORPUS_PATH, "wb", mtime=0) as f:
            f.write(text)
        print(f"corpus snapshot: {len(text):,} bytes from Python {platform.python_version()} -> {zoo.CORPUS_PATH}")

    common = {"seed": args.seed, "threads": args.threads, "python": platform.python_version(), "trained_on": platform.processor() or platform.machine()}
    if args.only in (None, "lm"):
        seed_everything(args.seed)
        data = zoo.char_lm_data()
        model = zoo.build_char_lm()
        t0 = time.perf_counter()
        losses = zoo.train_lm(model, data, steps=args.lm_steps, lr=args.lm_lr, batch_size=args.lm_batch, seed=args.seed)
        secs = time.perf_counter() - t0
        val = zoo.evaluate_lm(model, data, "val", n_windows=None)
        val64 = zoo.evaluate_lm(model, data, "val", n_windows=64)
        meta = {**common, "model": "vramlib.models.GPT", "config": zoo.CHAR_LM_CONFIG, "params": model.num_params(),
                "data": data.info, "split": "first 90% train, last 10% val (bytes)",
                "training": {"steps": args.lm_steps, "lr": args.lm_lr, "batch_size": args.lm_batch,
                             "optimizer": "AdamW(0.9,0.95) wd 0.1, warmup + cosine to 10%", "seconds": round(secs, 1),
                             "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4)},
                "metrics": {"val_all": {k: round(v, 4) for k, v in val.items()},
                            "val_64_windows": {k: round(v, 4) for k, v in val64.items()}}}
        zoo.save_checkpoint(model, args.out / "char_lm.pt", meta)
        print(f"char LM: {model.num_params():,} params, {secs:.0f} s, val ppl {val['perplexity']:.3f}, bpc {val['bpc']:.3f}")

    if args.only in (None, "digits"):
        seed_everything(args.seed)
        data = zoo.digits_data()
        model = zoo.build_digits_classifier()
        t0 = time.perf_counter()
        hist = zoo.train_classifier(model, data, epochs=args.digits_epochs, seed=args.seed)
        secs = time.perf_counter() - t0
        test = zoo.evaluate_classifier(model, data, "test")
        train = zoo.evaluate_classifier(model, data, "train")
        meta = {**common, "model": "MLP (nn.Sequential of Linear/ReLU)", "widths": list(zoo.DIGITS_WIDTHS),
                "params": sum(p.numel() for p in model.parameters()), "data": data.info,
                "split": "stratified 80/20 train/test, sklearn train_test_split(random_state=0)",
                "training": {"epochs": args.digits_epochs, "lr": 3e-3, "batch_size": 64,
                             "optimizer": "AdamW wd 1e-4, cosine", "seconds": round(secs, 1),
                             "final_train_loss": round(hist[-1], 4)},
                "metrics": {"test": {k: round(v, 4) for k, v in test.items()},
                            "train": {k: round(v, 4) for k, v in train.items()}}}
        zoo.save_checkpoint(model, args.out / "digits_mlp.pt", meta)
        print(f"digits MLP: {meta['params']:,} params, {secs:.1f} s, test accuracy {test['accuracy']:.4f}")


if __name__ == "__main__":
    main()
