"""How long and how much RAM does simulating a 7B training step take on this machine?

Simulates two training steps (forward, backward, AdamW step, zero_grad) of a model with the
Llama-2-7B architecture (hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 32000;
sizes from the model's public config.json) at batch 1 and sequence 2048, on fake tensors —
in fp32 and with bf16 autocast, AdamW in its foreach implementation (a GPU's default) — and prints the wall time and the process's peak resident
memory (``resource.getrusage``).  No weights are downloaded or allocated.

    python benchmarks/bench_simulate_7b.py [--steps 2] [--out benchmarks/results/simulate_7b.json]

Defined in Part I, "Three ways to know: formula, simulation, measurement".
"""

from __future__ import annotations

import argparse
import resource
import time

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, use_cache=False)


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)

    t_import = time.perf_counter()
    import torch
    import transformers  # noqa: F401  (its import time is part of the measurement)
    from transformers import LlamaConfig, LlamaForCausalLM

    from vramlib.core.records import write_record
    from vramlib.measure.simulate import simulate
    t_import = time.perf_counter() - t_import

    cfg = LlamaConfig(**LLAMA2_7B)
    cfg._attn_implementation = "sdpa"

    def step(autocast: bool):
        def run():
            model = LlamaForCausalLM(cfg)
            model.train()
            # foreach: the implementation AdamW uses by default on a GPU (not on the CPU)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
            x = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
            for _ in range(a.steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = model(input_ids=x, labels=x).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
        return run

    rows = []
    for name, ac in (("fp32 AdamW", False), ("bf16 autocast, fp32 weights, AdamW", True)):
        t0 = time.perf_counter()
        res = simulate(step(ac), device="cpu")
        dt = time.perf_counter() - t0
        rows.append(dict(case=name, seconds=round(dt, 2), peak_bytes=res.peak, peak_gib=round(res.peak / 2**30, 2),
                         peak_phase=res.peak_phase, breakdown=res.breakdown, storages=res.n_storages,
                         rss_mib_after=round(rss_mib(), 1)))
        print(f"{name:<38} simulated peak {res.peak / 2**30:7.2f} GiB during {res.peak_phase:<18} "
              f"in {dt:5.1f} s  (process peak RSS so far {rss_mib():.0f} MiB)")
    out = dict(
        what="simulate two training steps of a Llama-2-7B-architecture model, batch %d, seq %d" % (a.batch, a.seq),
        config=LLAMA2_7B, batch=a.batch, seq=a.seq, steps=a.steps, rows=rows,
        import_seconds=round(t_import, 2), peak_rss_mib=round(rss_mib(), 1),
    )
    print(f"peak RSS of the whole process: {out['peak_rss_mib']:.0f} MiB (limit 2048 MiB); "
          f"slowest case {max(r['seconds'] for r in rows):.1f} s (limit 60 s)")
    if a.out:
        config = out.pop("config")
        write_record(a.out, out, config, "cpu", simulated="fake tensors")
        out["config"] = config
        print("wrote", a.out)
    return out


if __name__ == "__main__":
    main()
