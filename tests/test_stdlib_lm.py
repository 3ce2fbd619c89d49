"""The LLM-scale model's corpus, split, checkpoints and training loop (vramlib.models.stdlib_lm)."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
import torch

from vramlib.models import stdlib_lm as S


def test_corpus_matches_its_manifest_and_is_small_enough():
    text, manifest = S.load_stdlib_corpus()
    assert hashlib.sha256(text).hexdigest() == manifest["sha256"]
    assert S.CORPUS_PATH.stat().st_size <= 3 * 2**20
    assert "PSF" in manifest["licence"]
    ends = [f["offset"] + f["bytes"] for f in manifest["files"]]
    assert ends[-1] == len(text) == manifest["bytes"]
    assert all(text[f["offset"]:].startswith(f"# file: {f['path']}\n".encode())
               for f in manifest["files"])


def test_a_damaged_corpus_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "c.txt.gz"
    bad.write_bytes(gzip.compress(b"not the corpus"))
    man = tmp_path / "c.json"
    man.write_text(json.dumps({"sha256": "0" * 64}))
    monkeypatch.setattr(S, "CORPUS_PATH", bad)
    monkeypatch.setattr(S, "MANIFEST_PATH", man)
    with pytest.raises(ValueError, match="SHA-256"):
        S.load_stdlib_corpus()


def test_split_is_by_file_and_deterministic():
    a, b = S.stdlib_lm_data(32), S.stdlib_lm_data(32)
    assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    assert a.info["val_files"] == a.info["files"] // S.HELD_OUT_EVERY
    assert len(a.train) + len(a.val) == a.info["bytes"]
    text, manifest = S.load_stdlib_corpus()
    first_val = manifest["files"][S.HELD_OUT_EVERY - 1]
    head = bytes(a.val[:len(f"# file: {first_val['path']}")].tolist())
    assert head.decode() == f"# file: {first_val['path']}"


def test_sharded_checkpoint_round_trip_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    m = S.build_stdlib_lm("small")
    paths = S.save_sharded(m, tmp_path / "stdlib_lm_small", max_shard_bytes=1 << 20)
    assert len(paths) > 1 and all(p.stat().st_size < (1 << 20) + 4096 for p in paths)
    keys = set().union(*(torch.load(p, weights_only=True) for p in paths))
    assert "lm_head.weight" not in keys                     # tied: saved once, as wte
    back = S.load_stdlib_lm("small", "cpu", tmp_path)
    assert back.lm_head.weight is back.wte.weight
    for (n, p), (_, q) in zip(m.state_dict().items(), back.state_dict().items()):
        assert torch.equal(p.bfloat16().float(), q), n
    with pytest.raises(FileNotFoundError, match="stdlib_lm_full"):
        S.load_stdlib_lm("full", "cpu", tmp_path)
    with pytest.raises(ValueError, match="size"):
        S.build_stdlib_lm("medium")


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    lrs = [S.lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3) and lrs == lrs[:10] + sorted(lrs[10:])[::-1]


def test_train_lm_is_seeded_and_learns():
    data = S.stdlib_lm_data(16)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = S.build_stdlib_lm("small")
        runs.append(S.train_lm(m, data, steps=12, batch_size=4, lr=3e-3, warmup=2,
                               log_every=1))
    losses = [[c["loss"] for c in r["curve"]] for r in runs]
    assert losses[0] == losses[1]
    assert min(losses[0][-3:]) < losses[0][0] - 1.0
    assert runs[0]["tokens"] == 12 * 4 * 16 and not runs[0]["stopped_early"]
