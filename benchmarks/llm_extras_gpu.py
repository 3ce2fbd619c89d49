"""QAT, low-rank, LoRA and distillation on Part II's LLM-scale model, on one GPU.

    python3 benchmarks/llm_extras_gpu.py --out DIR [--ckpt DIR2] [--smoke]

Runs right after ``benchmarks/train_llm_gpu.py`` on the fresh ``stdlib_lm`` "full"
checkpoint (``--ckpt``, default ``--out``, else the one shipped in ``vramlib/data``) and
writes ``DIR/stdlib_lm_extras.json`` (vramlib's records writer) with these sections (run
in the order lowrank, qat, lora, kd):

* ``qat`` — fake-quantized fine-tuning (``quant.prepare_qat``, weights w4 / w3, symmetric,
  groups of 128, STE) for ``QAT_STEPS`` steps from the trained weights, 3 seeds (data order),
  against post-training RTN at the same bits and groups (GPTQ / AWQ at the same bits are in
  ``stdlib_lm_compress.json``, same checkpoint, same evaluation), and a float fine-tune of
  the same steps, then rounded (is the gain the rounding, or more training?);
* ``lowrank`` — truncated SVD of every block's linear layers (attention qkv/proj, MLP
  fc/proj) at parameter fractions ``LOWRANK_RATIOS``: parameters against perplexity
  (deterministic: one run each);
* ``lora`` — rank-``LORA_RANK`` adapters on every block linear of a Wanda-2:4-pruned model
  and of an RTN-w3-g128 model, trained ``LORA_STEPS`` steps, 3 seeds: trainable parameters,
  perplexity before / after, peak allocated memory while training;
* ``kd`` — logit distillation (``distill.distillation_loss``, T, α below) of the "small"
  architecture from the bf16 full model, against the same student trained alone, same
  steps, 3 seeds; peak allocated memory of both runs next to the predicted terms (teacher
  bf16 weights; student weights + grads + AdamW states in fp32; logits of both);
* ``gptq_outside`` — whether an outside GPTQ implementation (gptqmodel, auto_gptq, optimum)
  is importable; the book does not download one, so without one it records the skip.

Targets (``TARGETS``) are written into the record's config before anything runs.  Each
section runs in its own ``try``; one that fails is recorded, and sections past the time
budget are skipped (said in the record).  About 3-4 minutes on an H100/H200.
``--smoke``: the small model as teacher on the CPU, a few steps, seconds.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vramlib import pick_device, seed_everything  # noqa: E402
from vramlib.compress import llm as L  # noqa: E402
from vramlib.compress.distill import distillation_loss  # noqa: E402
from vramlib.compress.lora import apply_lora, trainable_params  # noqa: E402
from vramlib.compress.lowrank import factorize_model  # noqa: E402
from vramlib.compress.quant import prepare_qat  # noqa: E402
from vramlib.core.records import write_record  # noqa: E402
from vramlib.models import stdlib_lm as S  # noqa: E402
from vramlib.models.zoo import train_lm  # noqa: E402

SEEDS = [0, 1, 2]
GROUP = 128
QAT_BITS, QAT_STEPS, QAT_LR, QAT_BATCH = (4, 3), 200, 1e-4, 32
LOWRANK_RATIOS = (0.75, 0.5, 0.25)
LORA_RANK, LORA_STEPS, LORA_LR, LORA_BATCH = 16, 200, 1e-3, 32
KD_STEPS, KD_BATCH, KD_LR, KD_T, KD_ALPHA = 600, 64, 2e-3, 1.0, 0.9
BUDGET_S = 200.0  # no section starts after this many seconds
#: Stated before the run (perplexity: lower is better; "interval" = zoo.seed_interval).
TARGETS = {
    "qat_w3_beats_rtn_w3": "QAT w3 g128 interval high < RTN w3 g128 perplexity",
    "qat_w3_beats_gptq_w3": "QAT w3 g128 interval high < GPTQ w3 g128 interval low "
                            "(GPTQ from stdlib_lm_compress.json)",
    "qat_w4_within_2pct": "QAT w4 g128 mean <= 1.02 x float perplexity",
    "qat_beats_float_finetune_rtn": "QAT w3 beats the float fine-tune rounded to w3 (RTN)",
    "lowrank_half_cost": "SVD at half the block parameters costs > 10 % perplexity "
                         "(a trained LM's weights are not low-rank)",
    "lora_recovers_2of4": "LoRA on the Wanda-2:4 model closes >= half its gap to float",
    "lora_recovers_w3": "LoRA on the RTN-w3 model closes >= half its gap to float",
    "kd_beats_alone": "KD student interval high < student-alone interval low",
    "kd_memory_increment": "(KD peak - alone peak, both above the memory allocated before "
                           "the alone runs) within 25 % of teacher bf16 weights + teacher "
                           "logits (fp32) + the KD loss's softmax temporaries",
}
LINEAR_SUFFIXES = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


def block_linear_names(model) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.endswith(LINEAR_SUFFIXES)]


def ppl(model, data, n_eval: int) -> float:
    return S.evaluate_heldout(model, data, n_windows=n_eval)["perplexity"]


def peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def finetune(model, data, steps: int, lr: float, batch: int, seed: int, loss_fn=None) -> dict:
    """zoo.train_lm (AdamW, warm-up + cosine) with its peak allocated memory and seconds."""
    dev = next(model.parameters()).device
    seed_everything(seed)
    peak_reset(dev)
    t0 = time.perf_counter()
    losses = train_lm(model, data, steps, lr=lr, batch_size=batch, seed=seed,
                      warmup=max(1, steps // 10), progress=False, loss_fn=loss_fn)
    return {"seconds": time.perf_counter() - t0, "peak_allocated_bytes": peak(dev),
            "final_loss": sum(losses[-20:]) / len(losses[-20:])}


def qat(model, data, n_eval: int, steps: int, calibs: dict) -> dict:
    res: dict = {"steps": steps, "lr": QAT_LR, "batch": QAT_BATCH, "group": GROUP}
    for b in QAT_BITS:
        kw = dict(bits=b, group_size=GROUP)
        res[f"rtn w{b}"] = ppl(L.compress_gpt(model, calibs[SEEDS[0]], "rtn", **kw), data,
                               n_eval)
        runs = []
        for s in SEEDS:
            m = prepare_qat(model, w_bits=b, granularity="group", group_size=GROUP)
            info = finetune(m, data, steps, QAT_LR, QAT_BATCH, s)
            runs.append({**info, "perplexity": ppl(m, data, n_eval)})
        res[f"qat w{b}"] = runs
        print(f"  QAT w{b}: rtn {res[f'rtn w{b}']:.4f} qat "
              f"{[r['perplexity'] for r in runs]}", flush=True)
    runs = []
    for s in SEEDS:                     # control: the same fine-tune without the rounding
        m = copy.deepcopy(model)
        info = finetune(m, data, steps, QAT_LR, QAT_BATCH, s)
        runs.append({**info, "perplexity": ppl(m, data, n_eval),
                     **{f"rtn w{b} after": ppl(L.compress_gpt(
                         m, calibs[SEEDS[0]], "rtn", bits=b, group_size=GROUP), data, n_eval)
                        for b in QAT_BITS}})
    res["float finetune"] = runs
    print(f"  float fine-tune: {runs}", flush=True)
    return res


def lowrank(model, data, n_eval: int) -> dict:
    names = block_linear_names(model)
    dense = sum(model.get_submodule(n).weight.numel() for n in names)
    res: dict = {"layers": names, "dense_block_linear_params": dense,
                 "model_params": model.num_params()}
    for r in LOWRANK_RATIOS:
        m = factorize_model(model, names, param_ratio=r)
        res[f"ratio {r}"] = {"params": sum(p.numel() for p in m.parameters()),
                             "perplexity": ppl(m, data, n_eval)}
        print(f"  low-rank {r}: {res[f'ratio {r}']}", flush=True)
    return res


def lora(model, data, n_eval: int, steps: int, calibs: dict) -> dict:
    bases = {"wanda 2:4": lambda s: L.compress_gpt(model, calibs[s], "wanda", sparsity=0.5,
                                                    n_m=(2, 4)),
             "rtn w3 g128": lambda s: L.compress_gpt(model, calibs[s], "rtn", bits=3,
                                                      group_size=GROUP)}
    res: dict = {"rank": LORA_RANK, "steps": steps, "lr": LORA_LR, "batch": LORA_BATCH,
                 "targets": list(LINEAR_SUFFIXES)}
    for name, make in bases.items():
        runs = []
        for s in SEEDS:
            m = make(s)
            before = ppl(m, data, n_eval)
            apply_lora(m, LORA_RANK, targets=LINEAR_SUFFIXES)
            n_train = trainable_params(m)
            info = finetune(m, data, steps, LORA_LR, LORA_BATCH, s)
            runs.append({**info, "before": before, "perplexity": ppl(m, data, n_eval),
                         "trainable_params": n_train})
        res[name] = runs
        print(f"  LoRA on {name}: {runs}", flush=True)
    return res


def kd_predicted_bytes(teacher, student, batch: int, block: int, vocab: int) -> dict:
    n_s = sum(p.numel() for p in student.parameters())
    logits = batch * block * vocab * 4
    return {"teacher_bf16_weights": 2 * teacher.num_params(),
            "student_weights_grads_adamw_fp32": 16 * n_s,
            "student_logits_fp32": logits, "teacher_logits_fp32": logits,
            "kd_softmax_temporaries": 3 * logits}


def kd(teacher, n_eval: int, steps: int) -> dict:
    """Student alone first, then with the bf16 teacher (made only then, so that the alone
    runs' allocated memory does not hold it): ``allocated_before`` / peak of each run."""
    dev = next(teacher.parameters()).device
    data = S.stdlib_lm_data(S.LM_CONFIGS["small"]["block_size"])
    res: dict = {"steps": steps, "batch": KD_BATCH, "lr": KD_LR, "T": KD_T, "alpha": KD_ALPHA,
                 "student_config": S.LM_CONFIGS["small"], "block_size": data.block_size,
                 "teacher_perplexity_at_block": ppl(teacher, data, n_eval)}
    holder: dict = {}

    def kd_loss_fn(m, x, y):
        with torch.no_grad():
            t_logits = holder["t16"](x)[0].float()
        return distillation_loss(m(x)[0], t_logits, y, KD_T, KD_ALPHA)

    for mode in ("alone", "kd"):
        if mode == "kd":
            t16 = copy.deepcopy(teacher).to(torch.bfloat16).eval()
            holder["t16"] = t16.requires_grad_(False)
        runs = []
        for s in SEEDS:
            seed_everything(1000 + s)
            student = S.build_stdlib_lm("small").to(dev)
            before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else None
            info = finetune(student, data, steps, KD_LR, KD_BATCH, s,
                            kd_loss_fn if mode == "kd" else None)
            runs.append({**info, "allocated_before": before,
                         "perplexity": ppl(student, data, n_eval),
                         "student_params": student.num_params()})
            del student
        res[mode] = runs
        print(f"  KD {mode}: {[r['perplexity'] for r in runs]}", flush=True)
    t16 = holder["t16"]
    res["teacher_bf16_perplexity_at_block"] = ppl(t16, data, n_eval)
    res["predicted_bytes"] = kd_predicted_bytes(t16, S.build_stdlib_lm("small"), KD_BATCH,
                                                data.block_size,
                                                S.LM_CONFIGS["small"]["vocab_size"])
    res["teacher_param_bytes_measured"] = sum(p.numel() * p.element_size()
                                              for p in t16.parameters())
    return res


def gptq_outside() -> dict:
    found = {name: importlib.util.find_spec(name) is not None
             for name in ("gptqmodel", "auto_gptq", "optimum")}
    note = ("no outside GPTQ implementation is installed; GPTQ is checked against its "
            "update equations (tests) instead") if not any(found.values()) else \
        "an outside implementation is importable but not wired in (no download at run time)"
    return {"importable": found, "run": False, "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path, help="checkpoint folder (default: --out, then vramlib)")
    ap.add_argument("--smoke", action="store_true", help="small model on the CPU, seconds")
    ap.add_argument("--budget", type=float, default=BUDGET_S,
                    help="seconds after which no further section starts")
    ap.add_argument("--sections", default="lowrank,qat,lora,kd",
                    help="comma list of the sections to run (default: all, in this order)")
    args = ap.parse_args()
    device = torch.device("cpu") if args.smoke else pick_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    size = "small" if args.smoke else "full"
    if args.smoke:                      # the code path only: tiny batches, the small widths
        globals().update(GROUP=64, QAT_BATCH=2, LORA_BATCH=2, KD_BATCH=2)
    folder = next((d for d in (args.ckpt, args.out, S.CHECKPOINT_DIR)
                   if d is not None and S.checkpoint_shards(size, d)), None)
    if folder is None:
        raise SystemExit(f"no stdlib_lm_{size} checkpoint in --ckpt, --out or vramlib/data")
    n_eval, steps, n_calib = (2, 2, 2) if args.smoke else (S.EVAL_WINDOWS, None, 128)
    model = S.load_stdlib_lm(size, device, folder)
    data = S.stdlib_lm_data(S.LM_CONFIGS[size]["block_size"])
    calibs = {s: S.calibration_windows(data, n_calib, s).to(device) for s in SEEDS}
    t0 = time.perf_counter()
    results: dict = {"checkpoint_dir": str(folder), "size": size,
                     "params": model.num_params(), "float_perplexity": ppl(model, data, n_eval),
                     "gptq_outside": gptq_outside()}
    sections = {"lowrank": lambda: lowrank(model, data, n_eval),
                "qat": lambda: qat(model, data, n_eval, steps or QAT_STEPS, calibs),
                "lora": lambda: lora(model, data, n_eval, steps or LORA_STEPS, calibs),
                "kd": lambda: kd(model, n_eval, steps or KD_STEPS)}
    chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
    bad = [x for x in chosen if x not in sections]
    if bad:
        ap.error(f"--sections: unknown {bad}; use a comma list of {list(sections)}")
    for name, fn in sections.items():
        if name not in chosen:
            continue
        if time.perf_counter() - t0 > args.budget:
            results[name] = {"skipped": f"time budget {args.budget:.0f} s spent"}
            continue
        ts = time.perf_counter()
        try:
            results[name] = {**fn(), "section_seconds": time.perf_counter() - ts}
        except Exception as e:  # noqa: BLE001 — record and go on
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
        print(f"{name}: {time.perf_counter() - ts:.0f} s", flush=True)
    results["total_seconds"] = time.perf_counter() - t0
    config = {"targets": TARGETS, "seeds": SEEDS, "group": GROUP, "eval_windows": n_eval,
              "n_calib": n_calib, "smoke": args.smoke, "budget_s": args.budget,
              "qat": dict(bits=QAT_BITS, steps=QAT_STEPS, lr=QAT_LR, batch=QAT_BATCH),
              "lowrank_ratios": LOWRANK_RATIOS,
              "lora": dict(rank=LORA_RANK, steps=LORA_STEPS, lr=LORA_LR, batch=LORA_BATCH),
              "kd": dict(steps=KD_STEPS, batch=KD_BATCH, lr=KD_LR, T=KD_T, alpha=KD_ALPHA)}
    path = write_record(args.out / "stdlib_lm_extras.json", results, config, device)
    print(f"total {results['total_seconds']:.0f} s; record {path}")


if __name__ == "__main__":
    main()
