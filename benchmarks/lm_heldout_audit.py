"""Audit the LLM-scale model's held-out numbers on a CPU: ``python3 benchmarks/lm_heldout_audit.py``.

Issue #17 reported the 19.2M ``full`` model (record ``stdlib_lm_train.json``) as worse than
the 12.6M model it replaced (``stdlib_lm_train_prev.json``): held-out loss 0.761 against
0.739 nats/byte, while the training curve of the same record shows 0.717 at step 3,500.
This script loads both checkpoints (the committed one, and the previous one from the git
commit that shipped it) and measures, on the CPU:

* per-window held-out losses on the evenly spaced windows of :meth:`LMData.windows` for
  64 windows (the curve's protocol in train_llm_gpu.py before this audit), 128 (Part II's
  protocol, ``stdlib_lm.EVAL_WINDOWS``) and ``--wide`` windows (these sets nest), so each
  protocol's mean and the *paired* difference new - previous (mean, standard error);
* the loss on ``--train-windows`` evenly spaced windows of the *training* split (eval
  mode, no dropout): the gap to held-out is the generalisation gap;
* for the committed model, per linear layer on calibration windows: the activation
  channel spread (max / median of mean|x_j|), the share of |x| >= 6 entries (LLM.int8's
  outlier threshold), and the layer output error tr(dW H dW^T) of RTN, GPTQ and AWQ at
  4 bits in groups of 128, relative to tr(W H W^T).

Writes ``stdlib_lm_heldout_audit.json`` (vramlib's records writer) into ``--out``.
``--smoke``: a seconds-long rehearsal (8 wide windows, 4 train windows, 2 calibration).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vramlib.compress import llm as L  # noqa: E402
from vramlib.compress.quant import linear_inputs  # noqa: E402
from vramlib.core.records import load_record, write_record  # noqa: E402
from vramlib.models import stdlib_lm as S  # noqa: E402
from vramlib.models.nanogpt import GPT, GPTConfig  # noqa: E402

PREV_COMMIT = "11af27b"      # the commit that shipped the 12.6M 'full' checkpoint
OUTLIER = 6.0                # LLM.int8()'s magnitude threshold for an outlier feature


def load_prev(commit: str) -> GPT:
    """The previous 'full' model, its shards read from ``commit`` with ``git show``."""
    cfg = load_record("stdlib_lm_train_prev").results["full"]["config"]
    names = subprocess.run(["git", "ls-tree", "--name-only", commit,
                            "vramlib/data/checkpoints/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    state = {}
    for n in sorted(x for x in names if "stdlib_lm_full-" in x):
        blob = subprocess.run(["git", "show", f"{commit}:{n}"], cwd=ROOT, check=True,
                              capture_output=True).stdout
        state.update(torch.load(io.BytesIO(blob), weights_only=True))
    if not state:
        raise FileNotFoundError(f"--prev-commit {commit}: no stdlib_lm_full-NN.pt there")
    model = GPT(GPTConfig(**cfg))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return model.eval()


@torch.no_grad()
def window_losses(model: GPT, x: torch.Tensor, y: torch.Tensor, batch: int = 32
                  ) -> torch.Tensor:
    """Mean next-byte loss of each window (nats/byte)."""
    out = []
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])[0]
        out.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                   y[i:i + batch].reshape(-1), reduction="none")
                   .view(len(logits), -1).mean(1))
    return torch.cat(out)


def protocols(data, models: dict, sizes: list[int]) -> dict:
    """Per model, the mean held-out loss on n evenly spaced windows for each n in
    ``sizes``, and the paired difference new - prev with its standard error."""
    total = (len(data.val) - 1) // data.block_size
    sets = {n: [k * total // n for k in range(n)] for n in sizes}
    union = sorted(set().union(*sets.values()))
    pos = {w: j for j, w in enumerate(union)}
    x, y = data.windows("val", None)
    per = {k: window_losses(m, x[union], y[union]) for k, m in models.items()}
    res = {}
    for n, s in sets.items():
        sel = [pos[w] for w in s]
        row = {k: v[sel].mean().item() for k, v in per.items()}
        row["se"] = {k: (v[sel].std() / len(sel) ** 0.5).item() for k, v in per.items()}
        if "prev" in per:
            d = per["new"][sel] - per["prev"][sel]
            row.update(diff=d.mean().item(), diff_se=(d.std() / len(sel) ** 0.5).item(),
                       frac_new_worse=(d > 0).float().mean().item())
        res[str(n)] = row
    return res


def layer_table(model: GPT, calib: torch.Tensor, held: torch.Tensor, group: int = 128
                ) -> list[dict]:
    """Per linear layer: activation channel spread and outlier share (calibration inputs),
    and the 4-bit output errors of RTN, GPTQ and AWQ (fitted on the calibration inputs)
    relative to tr(W H W^T), on the calibration inputs and on held-out inputs."""
    rows = []
    xs, xh = linear_inputs(model, calib), linear_inputs(model, held)
    for name, mod in model.named_modules():
        if name not in xs or name == "lm_head":
            continue
        x = xs[name].reshape(-1, xs[name].shape[-1])
        st, Hv = L.LayerStats.of(x), L.LayerStats.of(xh[name]).H
        w = mod.weight.detach()
        q = {"rtn": L.rtn_weight(w, 4, group), "gptq": L.gptq_weight(w, st.H, 4, group),
             "awq": L.awq_weight(w, st, 4, group)[0]}
        row = {"layer": name, "in": w.shape[1],
               "channel_spread": st.abs_mean.max().item() / st.abs_mean.median().item(),
               "act_absmax": x.abs().max().item(),
               "outlier_share": (x.abs() >= OUTLIER).float().mean().item()}
        for tag, H in (("calib", st.H), ("heldout", Hv)):
            ref = L.output_error(w, torch.zeros_like(w), H)
            row.update({f"rel_err_{k}_{tag}": L.output_error(w, v, H) / ref
                        for k, v in q.items()})
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "vramlib/data/records")
    ap.add_argument("--prev-commit", default=PREV_COMMIT)
    ap.add_argument("--wide", type=int, default=512, help="windows of the wide protocol")
    ap.add_argument("--train-windows", type=int, default=128)
    ap.add_argument("--calib", type=int, default=16, help="calibration windows per layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.wide, args.train_windows, args.calib = 8, 4, 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = S.stdlib_lm_data(S.LM_CONFIGS["full"]["block_size"])
    models = {"new": S.load_stdlib_lm("full"), "prev": load_prev(args.prev_commit)}
    sizes = sorted({4, 8} if args.smoke else {64, S.EVAL_WINDOWS, args.wide})
    res = {"params": {k: m.num_params() for k, m in models.items()},
           "heldout": protocols(data, models, sizes)}
    xt, yt = data.windows("train", args.train_windows)
    res["train_split"] = {k: window_losses(m, xt, yt).mean().item()
                          for k, m in models.items()}
    calib = S.calibration_windows(data, args.calib, 0)
    res["layers_new"] = layer_table(models["new"], calib, data.windows("val", args.calib)[0])
    res["seconds"] = time.perf_counter() - t0
    config = {"protocol_windows": sizes, "eval_windows": S.EVAL_WINDOWS,
              "train_windows": args.train_windows, "calib_windows": args.calib,
              "prev_commit": args.prev_commit, "outlier_threshold": OUTLIER,
              "group": 128, "bits": 4, "smoke": args.smoke}
    path = write_record(args.out / "stdlib_lm_heldout_audit.json", res, config,
                        torch.device("cpu"))
    print(json.dumps({k: res[k] for k in ("params", "heldout", "train_split")}, indent=1))
    for r in res["layers_new"]:
        print(f"{r['layer']:18s} spread {r['channel_spread']:5.1f} max|x| "
              f"{r['act_absmax']:5.1f}", " ".join(
                  f"{k} {r[f'rel_err_{k}_calib']:.1e}/{r[f'rel_err_{k}_heldout']:.1e}"
                  for k in ("rtn", "gptq", "awq")))
    print(f"{res['seconds']:.0f} s; record {path}")


if __name__ == "__main__":
    main()
