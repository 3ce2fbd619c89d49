import pytest

from vramlib import GB, GiB, fmt_bytes, parse_bytes, to_gb, to_gib


def test_fmt_bytes_names_the_unit():
    assert fmt_bytes(3 * GiB) == "3.00 GiB"
    assert fmt_bytes(80 * GB, binary=False) == "80.00 GB"
    assert fmt_bytes(80 * GB) == "74.51 GiB"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536, unit="KiB") == "1.50 KiB"


def test_conversions():
    assert to_gib(GiB) == 1.0 and to_gb(GB) == 1.0
    assert parse_bytes("80GB") == 80 * GB
    assert parse_bytes("24 GiB") == 24 * GiB
    assert parse_bytes("1.5 MiB") == 1572864
    assert parse_bytes(1234) == 1234


@pytest.mark.parametrize("bad", ["eighty", "80 XB", "-5GB", ""])
def test_parse_bytes_rejects_bad_text_with_a_hint(bad):
    with pytest.raises(ValueError, match="GB|GiB|negative"):
        parse_bytes(bad)


def test_parse_bytes_rejects_negative_numbers():
    with pytest.raises(ValueError, match="negative"):
        parse_bytes(-1)


def test_fmt_bytes_rejects_unknown_unit_and_non_numbers():
    with pytest.raises(ValueError, match="unknown unit"):
        fmt_bytes(1, unit="furlongs")
    with pytest.raises(TypeError):
        fmt_bytes("12")


def test_fmt_num_precision_sign_and_percent():
    from vramlib.core.units import fmt_num
    assert fmt_num(3.79486) == "3.79"
    assert fmt_num(0.1234, 1, pct=True) == "12.3%"
    assert fmt_num(0.159, 0, pct=True, signed=True) == "+16%"
    assert fmt_num(-0.3, 1, pct=True, signed=True) == "-30.0%"
    assert fmt_num(-1e-6, 2) == "0.00" and fmt_num(-1e-6, 2, signed=True) == "±0.00"


def test_fmt_num_rejects_bad_input():
    import pytest
    from vramlib.core.units import fmt_num
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            fmt_num(bad)
    with pytest.raises(TypeError, match="number"):
        fmt_num("3.7")
    with pytest.raises(ValueError, match="digits"):
        fmt_num(1.0, -1)
