"""The one provenance record: typed, versioned, one writer, one reader; the migration of the
version-0 files keeps every value (pre-migration copies in tests/data/records_v0/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramlib.core.records import (SCHEMA_VERSION, Provenance, Record, load_record, load_records,
                                  migrate_v0, provenance_line, read_record, records_dir,
                                  write_record)

V0 = Path(__file__).parent / "data" / "records_v0"
OLD = sorted(V0.glob("*.json"))


def leaves(x, path=()):
    """Every (path, scalar) of a JSON value."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, path + (i,))
    else:
        yield path, x


def test_every_version_0_original_was_migrated_and_every_record_reads():
    # Records written since the migration are version 1 from the start and have no original.
    shipped = {p.name for p in records_dir().glob("*.json")}
    assert {p.name for p in OLD} <= shipped
    assert len(OLD) >= 14
    for name in shipped:
        assert read_record(records_dir() / name).schema_version == SCHEMA_VERSION


@pytest.mark.parametrize("old", OLD, ids=lambda p: p.stem)
def test_migration_is_the_committed_file_and_keeps_every_value(old):
    data = json.loads(old.read_text())
    rec = migrate_v0(old.stem, data)
    shipped = json.loads((records_dir() / old.name).read_text())
    assert shipped == json.loads(json.dumps(rec.to_dict(), default=str))   # re-run = committed
    assert shipped["schema_version"] == SCHEMA_VERSION
    assert shipped["config"] == data.get("config", {})
    rest = {k: v for k, v in data.items() if k not in ("provenance", "config")}
    results = rest["results"] if set(rest) == {"results"} else rest
    assert shipped["results"] == (results if isinstance(results, dict) else {"rows": results})
    new_values = [v for _, v in leaves(shipped["provenance"])]
    for path, v in leaves(data["provenance"]):
        assert v in new_values, f"{old.name}: provenance {'/'.join(map(str, path))} = {v!r} lost"
    assert isinstance(read_record(records_dir() / old.name).provenance, Provenance)


def test_the_leaf_check_can_fail():
    data = json.loads((V0 / "part1_gpu.json").read_text())
    rec = migrate_v0("part1_gpu", json.loads(json.dumps(data))).to_dict()
    rec["results"]["pretraining"]["batch_sweep"][0]["measured"] += 1
    assert rec["results"] != data["results"]


def test_migration_fixes_the_known_v0_faults():
    quant = load_record("compress_quant_gpu").provenance
    assert (quant.cuda, quant.driver) == ("13.0", None)          # CUDA version was in 'driver'
    part1 = load_record("part1_gpu").provenance
    assert part1.device == "NVIDIA H100 80GB HBM3" and part1.kind == "cuda"   # had no 'device'
    for rec in load_records():
        assert rec.provenance.device and rec.provenance.kind in ("cuda", "cpu"), rec.name
        assert rec.provenance.date.startswith("2026-")


def test_migrating_twice_is_refused_and_reading_v0_says_how_to_fix(tmp_path):
    with pytest.raises(ValueError, match="already schema version"):
        migrate_v0("x", {"schema_version": 1})
    p = tmp_path / "old.json"
    p.write_text((V0 / "part1_gpu.json").read_text())
    with pytest.raises(ValueError, match="migrate_records.py"):
        read_record(p)


def test_write_then_read_round_trip(tmp_path):
    path = write_record(tmp_path / "demo_cpu.json", {"peak": 123}, {"batch": 2}, "cpu", note="x")
    rec = read_record(path)
    assert isinstance(rec, Record) and rec.name == "demo_cpu" and rec.file == "demo_cpu.json"
    assert rec.results == {"peak": 123} and rec.config == {"batch": 2}
    assert rec.provenance.kind == "cpu" and rec.provenance.torch and rec.provenance.extra == {"note": "x"}
    assert provenance_line(rec).startswith("recorded on ")
    with pytest.raises(TypeError, match="results and config must be dicts"):
        write_record(tmp_path / "bad.json", [1], {})


def test_reader_finds_package_data_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = load_record("part1_gpu")
    assert rec is not None and "pretraining" in rec.results
    assert load_record("no_such_record") is None
    assert provenance_line(None) == "no recorded GPU run yet"


def test_provenance_line_fits_the_page():
    rec = Record("long", Provenance(device="NVIDIA H100 80GB HBM3 " * 3, kind="cuda",
                                    date="2026-11-27T00:00:00+00:00", torch="2.13.0+cu130",
                                    cuda="13.0", driver="580.159.04"), {}, {})
    text = provenance_line(rec)
    assert "\n" in text and max(map(len, text.splitlines())) <= 100
    assert " ".join(text.split()) == " ".join(provenance_line(rec, width=10**6).split())
    assert [r.name for r in load_records("hardware", kind="cuda")] == ["hardware_h100", "hardware_h200"]
    with pytest.raises(ValueError, match="record name"):
        load_record("../secrets")
