"""Command-line entry point: ``python -m vramlib`` or ``vramlib``.

Defined in Chapter 0, "Which device am I on?" (the ``device`` command) and Part I,
"The calculator" (the ``estimate``, ``fit`` and ``models`` commands), and "Serving memory"
(the ``serve`` command).
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_device(args: argparse.Namespace) -> int:
    from .core.device import describe_device, device_info

    print(json.dumps(device_info(args.device), indent=2) if args.json else describe_device(args.device))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .estimate import count_params, list_models, load_model_config

    rows = []
    for n in list_models():
        spec = load_model_config(n)
        rows.append({"name": n, "family": spec.family, "params": count_params(spec).total, "source": spec.source})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<16} {r['family']:<9} {r['params'] / 1e9:7.2f} B  {r['source']}")
    return 0


def _train_kwargs(args: argparse.Namespace) -> dict:
    return dict(num_gpus=args.gpus, zero=args.zero, tp=args.tp, pp=args.pp, weights_dtype=args.dtype,
                autocast=args.autocast, master_weights=args.master_weights, optimizer=args.optimizer,
                grad_accum=args.grad_accum, checkpointing=args.checkpointing, attention=args.attention,
                trainable=args.trainable, last_k=args.last_k, lora_rank=args.lora_rank,
                lora_targets=args.lora_targets, qlora_recipe=args.qlora_recipe, keep_logits=args.keep_logits,
                device=args.device)


def _infer_kwargs(args: argparse.Namespace) -> dict:
    return dict(new_tokens=args.new_tokens, tp=args.tp, pp=args.pp, weights=args.weights, group_size=args.group_size,
                kv_dtype=args.kv_dtype, cache=args.cache, full_logits=args.full_logits, attention=args.attention,
                device=args.device, quant_library=args.quant_library)


def _extensions(args: argparse.Namespace):
    """The serving/MoE/beyond-basics options of ``estimate`` (:mod:`vramlib.estimate.extend`)."""
    from .estimate.extend import Extensions

    return Extensions(ep=args.ep, capacity_factor=args.capacity_factor, kv_scales=args.kv_scales,
                      offload=args.offload, fp8=args.fp8, sp=args.sp, cp=args.cp)


def _print_extensions(ext: dict) -> None:
    """The ``extensions`` section as indented ``name: value`` lines."""
    from .core.units import fmt_bytes

    print("extensions (beside the breakdown; its peak does not include them):")
    for group, values in ext.items():
        if group == "options":
            continue
        print(f"  {group}:")
        for k, v in values.items():
            plain = k in ("ep", "tp", "sp", "cp", "what", "kv_scales", "capacity_factor") \
                or k.endswith("params") or not isinstance(v, (int, float))
            print(f"    {k}: {v if plain else f'{v:.3f}' if k == 'ratio' else fmt_bytes(v)}")


def _cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate_inference, estimate_training, load_model_config
    from .estimate.extend import estimate_extensions

    reserve = args.reserve
    ext_opts = _extensions(args)
    if args.stage == "train":
        b = estimate_training(args.model, args.batch, args.seq, reserve_fraction=reserve, **_train_kwargs(args))
    else:
        b = estimate_inference(args.model, args.batch, args.prompt, reserve_fraction=reserve, **_infer_kwargs(args))
    ext = estimate_extensions(b, load_model_config(args.model), ext_opts)
    if args.json:
        print(json.dumps({**b.to_dict(), **({"extensions": ext} if ext else {})}, indent=2))
    else:
        print(f"{args.model} · {args.stage}")
        print(b.table())
        if args.gpu:
            print(f"fits {args.gpu}: {'yes' if b.fits(args.gpu) else 'no'}")
        if ext:
            _print_extensions(ext)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .core.units import fmt_bytes
    from .estimate.serving import serve_plan

    plan = serve_plan(args.model, args.gpu, weights=args.weight_bytes, activations=args.activation_bytes,
                      weights_format=args.weights, tp=args.tp, kv_dtype=args.kv_dtype,
                      kv_scales=args.kv_scales, gpu_memory_utilization=args.gpu_memory_utilization,
                      max_model_len=args.max_model_len, block_size=args.block_size,
                      max_num_batched_tokens=args.max_num_batched_tokens)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print(f"{args.model} served on {args.gpu} (tp {args.tp}), {args.gpu_memory_utilization:g} of its memory:")
    for k in ("budget", "weights", "activations", "non_torch", "kv_pool", "kv_bytes_per_sequence"):
        print(f"  {k.replace('_', ' '):<24} {fmt_bytes(plan[k]):>12}")
    print(f"  {'KV blocks':<24} {plan['num_blocks']:>12,} of {args.block_size} tokens")
    print(f"  {'concurrent sequences':<24} {plan['max_num_seqs']:>12,} of {args.max_model_len:,} tokens")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from .estimate import fit

    if args.stage == "train":
        kw = dict(_train_kwargs(args), seq_len=args.seq, batch=args.batch)
    else:
        kw = dict(_infer_kwargs(args), batch=args.batch)
        if args.what == "batch":
            kw["prompt_len"] = args.prompt
    ans = fit(args.model, args.gpu, stage=args.stage, what=args.what, **kw)
    if args.json:
        print(json.dumps(dict(what=ans.what, value=ans.value, needed=ans.needed, capacity=ans.capacity,
                              margin=ans.margin, next_needed=ans.next_needed), indent=2))
    else:
        print(f"{args.model} · {args.stage} on {args.gpu}:\n  {ans.line()}")
    return 0


def _scenario_flags(e: argparse.ArgumentParser) -> None:
    """The scenario flags shared by ``estimate`` and ``fit``."""
    from .estimate.inference import QUANT_LIBRARIES, WEIGHT_FORMATS
    from .estimate.training import ATTENTION, CHECKPOINTING, OPTIMIZERS, QLORA_RECIPES

    e.add_argument("model", help="bundled name (see `vramlib models`) or path to a config.json")
    e.add_argument("--stage", choices=("train", "inference"), default="train")
    e.add_argument("--seq", type=int, default=2048, help="training sequence length")
    e.add_argument("--prompt", type=int, default=512, help="inference prompt length")
    e.add_argument("--new-tokens", type=int, default=128)
    e.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="bf16", help="training weights dtype")
    e.add_argument("--autocast", choices=("none", "bf16", "fp16"), default="none")
    e.add_argument("--master-weights", action="store_true", help="fp32 master copy of 16-bit weights")
    e.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    e.add_argument("--grad-accum", type=int, default=1)
    e.add_argument("--checkpointing", choices=CHECKPOINTING, default="none")
    e.add_argument("--attention", choices=ATTENTION, default="sdpa")
    e.add_argument("--trainable", choices=("all", "last-k", "lora", "qlora"), default="all")
    e.add_argument("--last-k", type=int, default=1)
    e.add_argument("--lora-rank", type=int, default=16)
    e.add_argument("--lora-targets", default="all-linear", help="all-linear, attn, or e.g. q,k,v,o")
    e.add_argument("--qlora-recipe", choices=QLORA_RECIPES, default="peft",
                   help="peft: prepare_model_for_kbit_training (fp32 upcast, the usual recipe); bf16: bf16 compute")
    e.add_argument("--keep-logits", action="store_true")
    e.add_argument("--weights", choices=WEIGHT_FORMATS, default="bf16", help="inference weights format")
    e.add_argument("--group-size", type=int, default=64)
    e.add_argument("--quant-library", choices=tuple(QUANT_LIBRARIES), default="auto",
                   help="who quantized the weights: torchao (int8/int4) or bitsandbytes (int8/nf4)")
    e.add_argument("--kv-dtype", choices=("auto", "fp32", "bf16", "fp16", "fp8", "int8"), default="auto")
    e.add_argument("--cache", choices=("dynamic", "static"), default="dynamic")
    e.add_argument("--full-logits", action="store_true")
    e.add_argument("--gpus", type=int, default=1)
    e.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0)
    e.add_argument("--tp", type=int, default=1)
    e.add_argument("--pp", type=int, default=1)
    e.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    e.add_argument("--json", action="store_true", help="print the answer as JSON")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vramlib", description="GPU memory tools of the executable book.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("device", help="describe the device the book's experiments would run on")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    d.add_argument("--json", action="store_true", help="print the facts as JSON")
    d.set_defaults(func=_cmd_device)

    m = sub.add_parser("models", help="list the bundled model configs")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_cmd_models)

    e = sub.add_parser("estimate", help="estimate the peak memory of training or generation",
                       description="Per-GPU peak memory, component by component (Part I, 'The calculator').")
    _scenario_flags(e)
    e.add_argument("--batch", type=int, default=1)
    e.add_argument("--reserve", type=float, default=None,
                   help="allocator reserve as a fraction of the peak (default: modelled at the limit, "
                        "vramlib.estimate.reserve; 0.094 is the median far from it)")
    e.add_argument("--gpu", default=None, help="also say whether it fits this GPU (e.g. h100-sxm)")
    _extension_flags(e)
    e.set_defaults(func=_cmd_estimate)

    f = sub.add_parser("fit", help="largest batch or context that fits a GPU, with the margin",
                       description="Will it fit? The largest batch (or context) on a GPU that is never "
                                   "above the true one (Part I, 'The calculator').")
    _scenario_flags(f)
    f.add_argument("--gpu", required=True, help="catalogue key or name (see vramlib.hardware.gpus), e.g. h100-sxm, 'RTX 4090'")
    f.add_argument("--what", choices=("batch", "context"), default="batch",
                   help="batch: at --seq (train) or --prompt (inference); context: at --batch")
    f.add_argument("--batch", type=int, default=1, help="batch size when solving for the context")
    f.set_defaults(func=_cmd_fit)
    _serve_parser(sub)
    return p


def _extension_flags(e: argparse.ArgumentParser) -> None:
    """``estimate``'s serving, MoE and beyond-basics training options (reported beside the
    breakdown, :mod:`vramlib.estimate.extend`)."""
    g = e.add_argument_group("MoE, KV scales, offload, FP8, SP/CP (reported beside the breakdown)")
    g.add_argument("--ep", type=int, default=1, help="expert-parallel degree (MoE): experts per GPU = E / ep")
    g.add_argument("--capacity-factor", type=float, default=None,
                   help="fixed-capacity MoE dispatch (default: dropless)")
    g.add_argument("--kv-scales", choices=("none", "token", "head"), default="none",
                   help="fp32 scale per token or per token and KV head of an int8/fp8 KV cache")
    g.add_argument("--offload", choices=("none", "optimizer", "all"), default="none",
                   help="training state in host memory: optimizer states, or all (FSDP2 CPUOffloadPolicy)")
    g.add_argument("--fp8", action="store_true", help="FP8 training (torchao float8 linears)")
    g.add_argument("--sp", action="store_true", help="sequence parallelism over the TP group (needs --tp > 1)")
    g.add_argument("--cp", type=int, default=1, help="context-parallel degree")


def _serve_parser(sub) -> None:
    """The ``serve`` command: a serving engine's memory plan (Part I, "Serving memory")."""
    s = sub.add_parser("serve", help="a serving engine's memory plan: concurrent sequences at a context",
                       description="Weights + profiled activations + KV pool under a memory-utilization "
                                   "fraction (as vLLM plans it; Part I, 'Serving memory').")
    s.add_argument("model", help="bundled name, config.json path, or an MLA config (deepseek-v2, deepseek-v3)")
    s.add_argument("--gpu", required=True, help="catalogue key or name, e.g. h100-sxm")
    s.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="fraction of the GPU the engine may use")
    s.add_argument("--max-model-len", type=int, default=4096, help="tokens per sequence (prompt + output)")
    s.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    s.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="tokens of the profiling forward pass (activations)")
    s.add_argument("--weights", default="bf16", help="weights format (as for estimate --weights)")
    s.add_argument("--kv-dtype", choices=("bf16", "fp16", "fp32", "fp8", "int8"), default="bf16")
    s.add_argument("--kv-scales", choices=("none", "token", "head"), default="none")
    s.add_argument("--tp", type=int, default=1)
    s.add_argument("--weight-bytes", type=float, default=None, help="override the weights' bytes (MLA configs)")
    s.add_argument("--activation-bytes", type=float, default=None, help="override the profiled activations' bytes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_serve)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"vramlib: error: {e}", file=sys.stderr)
        return 2
    except (OverflowError, RecursionError) as e:    # inputs far outside any real model
        print(f"vramlib: error: an input is too large or too deeply nested ({type(e).__name__}); "
              "check the numbers and the config file", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
