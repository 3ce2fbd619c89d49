"""scripts/unbound_numbers.py finds numbers typed into prose and leaves bound or cited ones."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from unbound_numbers import scan, unbound_in_text  # noqa: E402


def numbers(text: str) -> list[str]:
    return [u.number for u in unbound_in_text(text, "x.md")]


def test_typed_numbers_are_reported():
    assert numbers("The model is 2× faster and reserves 61 % more.") == ["2×", "61%"]
    assert numbers("Peak 10.03 MiB against 1,024 tokens.") == ["10.03", "1,024"]
    assert numbers("````{admonition} Verdict\n:class: tip\nIt holds within 9.4 %.\n````") == ["9.4%"]


def test_bound_cited_and_named_numbers_are_not():
    assert numbers("The peak is {glue}`peak_mib` MiB, $2mnk = 8.5$ FLOPs, `x = 3.5`.") == []
    assert numbers("Adam uses 16 bytes per parameter {cite}`kingma2015adam`.") == []
    assert numbers('Article B says INT8 "can be 3× faster" (**B8**).') == []
    assert numbers("An H100, fp32, Llama-2-7B, B12, 2:4 sparsity, 4-bit, PyTorch 2.0, 2 × 4.") == []
    assert numbers("```python\nx = 12.5\n```\nThree bytes, 2 bits, in 2023.") == []


def test_the_book_is_scanned():
    assert isinstance(scan(), list)


def test_quoted_claims_front_matter_and_substitutions():
    text = "---\nmyst:\n  substitutions:\n    x: '61 %'\n---\nThe value is {{ x }}.\n"
    assert numbers(text) == []
    # a claim's quoted numbers are the source's; the sentence's own numbers are not
    assert numbers('Article B says "INT8 is 3× faster" (**B8**); we measured 1.30×.') == ["1.30×"]
    assert numbers('| A9 | "7B → 14 GB, 13B → 26 GB" | holds | error +3.9 % |') == ["3.9%"]


def test_shapes_and_product_numbers_are_names():
    assert numbers("Two 8192×8192 matrices on an RTX 4090, batch 4 × 2048 tokens.") == []


def test_a_folder_is_scanned_and_a_bad_path_named(capsys):
    import pytest
    from unbound_numbers import ROOT, main

    main(["--count", str(ROOT / "chapters" / "appendix")])
    assert capsys.readouterr().out.strip().isdigit()
    with pytest.raises(SystemExit, match="neither a chapter"):
        main([str(ROOT / "README.md.nope")])
