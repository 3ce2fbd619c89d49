"""vramlib.core.report: result tables, glued numbers and target marks (Chapter 0)."""

import pytest

from vramlib.core.report import Text, glue, table, target


def test_table_text_and_html_agree_on_cells():
    t = table([{"model": "gpt2", "peak (MiB)": 1234.567, "error": -0.0123, "n": 12345}],
              formats={"error": "+.1%"}, caption="Table 1. predicted vs measured")
    text = str(t)
    assert "1234.57" in text and "-1.2%" in text and "12,345" in text
    html = t._repr_html_()
    assert "<caption>Table 1. predicted vs measured</caption>" in html
    assert '<td style="text-align:right">-1.2%</td>' in html
    assert '<td style="text-align:left">gpt2</td>' in html


def test_table_rejects_mismatched_rows_and_unknown_formats():
    with pytest.raises(ValueError, match="row 0 has 1 values for 2 columns"):
        table([(1,)], columns=["a", "b"])
    with pytest.raises(ValueError, match="formats names columns that do not exist"):
        table([{"a": 1}], formats={"b": ".1f"})
    with pytest.raises(ValueError, match="columns"):
        table([(1, 2)])


def test_target_and_glue_text():
    assert target(0.8, 1.0) == "met" and target(1.2, 1.0) == "MISSED"
    assert target(5, 3, ">=") == "met"
    with pytest.raises(ValueError, match="op must be"):
        target(1, 1, "==")
    g = glue("ppl_int8", 3.79486)
    assert isinstance(g, Text) and repr(g) == "3.79"
    assert glue("rise", 0.159, 0, pct=True, signed=True) == "+16%"
    assert glue("n_params", 1234567, None) == "1,234,567"
    with pytest.raises(ValueError, match="identifier"):
        glue("not a name", 1.0)


def test_glued_values_reads_a_notebooks_glue_outputs(tmp_path):
    import json

    import pytest

    from vramlib.core.report import glued_values

    mime = "application/papermill.record/text/plain"
    out = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": n}},
            "data": {mime: t}} for n, t in (("a", "'61%'"), ("b", ["1.67", " MiB"]))]
    out.append({"output_type": "stream", "name": "stdout", "text": "x"})
    nb = {"cells": [{"cell_type": "code", "source": "", "outputs": out},
                    {"cell_type": "markdown", "source": "text"}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert glued_values(path) == {"a": "61%", "b": "1.67 MiB"}
    with pytest.raises(FileNotFoundError, match="no such notebook"):
        glued_values(tmp_path / "missing.ipynb")
