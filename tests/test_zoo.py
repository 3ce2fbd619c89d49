import json
import math

import pytest
import torch

from vramlib.models import zoo


def test_corpus_snapshot_and_split():
    raw = zoo.load_corpus()
    assert raw.startswith(b"The \"assert\" statement") and len(raw) > 400_000
    d = zoo.char_lm_data()
    assert len(d.train) + len(d.val) == len(raw)
    assert len(d.val) == int(len(raw) * zoo.VAL_FRACTION)
    # the split is contiguous: train then validation
    assert bytes(d.val[:50].to(torch.uint8).tolist()) == raw[len(d.train):len(d.train) + 50]


def test_windows_are_fixed_and_shifted():
    d = zoo.char_lm_data()
    x1, y1 = d.windows("val", 8)
    x2, _ = d.windows("val", 8)
    assert x1.shape == (8, d.block_size) and torch.equal(x1, x2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    with pytest.raises(ValueError):
        d.windows("test", 8)


def test_uniform_model_has_vocab_perplexity():
    """A model whose logits are all equal predicts 1/256 for every byte: perplexity 256, 8 bits/char."""
    d = zoo.char_lm_data()

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros(*x.shape, 256) + 0 * self.w

    m = zoo.evaluate_lm(Uniform(), d, n_windows=4)
    assert m["perplexity"] == pytest.approx(256.0, rel=1e-5)
    assert m["bpc"] == pytest.approx(8.0, rel=1e-6)


def test_digits_split():
    d = zoo.digits_data()
    assert len(d.y_train) == 1437 and len(d.y_test) == 360
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert torch.bincount(d.y_test).min() >= 35   # stratified: every class ~36 times
    assert d.x_train.dtype == d.x_test.dtype == torch.float32
    assert d.y_train.dtype == d.y_test.dtype == torch.int64
    assert torch.equal(d.x_test * 16, (d.x_test * 16).round())   # pixels 0..16, exact
    assert d.info == {"dataset": zoo.DIGITS_DATASET, "n": 1797, "train": 1437, "test": 360,
                      "split_seed": 0}
    with pytest.raises(ValueError, match="seed: only the split with seed 0"):
        zoo.digits_data(1)


def test_digits_file_is_sklearn_split_bit_for_bit():
    """The shipped file is what scripts/make_digits_data.py writes from scikit-learn, and
    digits_data() gives the tensors the book computed from scikit-learn before the file."""
    pytest.importorskip("sklearn", reason="scikit-learn (extra zoo-data) regenerates the file")
    import sys

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    sys.path.insert(0, str(zoo.DATA_DIR.parents[1] / "scripts"))
    import make_digits_data

    assert zoo.DIGITS_SPLIT_PATH.read_bytes() == make_digits_data.npz_bytes(make_digits_data.split_arrays())
    b = load_digits()
    xtr, xte, ytr, yte = train_test_split(b.data, b.target, test_size=0.2, random_state=0,
                                          stratify=b.target)
    d = zoo.digits_data()
    assert torch.equal(d.x_train, torch.tensor(xtr, dtype=torch.float32) / 16.0)
    assert torch.equal(d.x_test, torch.tensor(xte, dtype=torch.float32) / 16.0)
    assert torch.equal(d.y_train, torch.tensor(ytr)) and torch.equal(d.y_test, torch.tensor(yte))


@pytest.mark.slow
def test_checkpoints_load_and_match_metadata():
    lm, data = zoo.load_char_lm()
    meta = zoo.checkpoint_metadata("char_lm")
    got = zoo.evaluate_lm(lm, data, n_windows=64)
    assert got["perplexity"] == pytest.approx(meta["metrics"]["val_64_windows"]["perplexity"], abs=2e-3)
    assert got["bpc"] < 3.0                       # far below the 8 bits of a uniform guess
    assert zoo.CHAR_LM_CHECKPOINT.stat().st_size <= 5 * 10**6

    clf, ddata = zoo.load_digits_classifier()
    meta = zoo.checkpoint_metadata("digits_mlp")
    acc = zoo.evaluate_classifier(clf, ddata)["accuracy"]
    assert acc == pytest.approx(meta["metrics"]["test"]["accuracy"], abs=1e-4)
    assert acc > 0.95
    assert zoo.DIGITS_CHECKPOINT.stat().st_size <= 2 * 10**6


def test_state_dict_loads_weights_only():
    state = torch.load(zoo.CHAR_LM_CHECKPOINT, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert json.loads(zoo.CHAR_LM_CHECKPOINT.with_suffix(".json").read_text())["config"] == zoo.CHAR_LM_CONFIG


@pytest.mark.slow
def test_training_lowers_loss_quickly():
    torch.manual_seed(0)
    d = zoo.digits_data()
    m = zoo.build_digits_classifier((64, 32, 10))
    hist = zoo.train_classifier(m, d, epochs=3, progress=False)
    assert hist[-1] < hist[0] and hist[0] < math.log(10) + 0.1


def test_bad_arguments():
    with pytest.raises(ValueError):
        zoo.build_char_lm(n_layers=3)
    with pytest.raises(ValueError):
        zoo.build_digits_classifier((64,))
    with pytest.raises(ValueError):
        zoo.checkpoint_metadata("resnet")
    with pytest.raises(ValueError):
        zoo.train_lm(zoo.build_char_lm(), zoo.char_lm_data(), steps=0)


def test_accuracy_stderr_is_binomial_and_checks_its_input():
    data = zoo.digits_data()
    n = len(data.split("test")[1])
    assert zoo.accuracy_stderr(0.9, data) == pytest.approx((0.9 * 0.1 / n) ** 0.5)
    assert zoo.accuracy_stderr(1.0, data) == 0.0
    with pytest.raises(ValueError, match="accuracy"):
        zoo.accuracy_stderr(97.5, data)  # points, not a fraction


def test_seed_interval_is_a_student_t_interval():
    mean, lo, hi = zoo.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hi - mean == pytest.approx(4.303 * 1.0 / 3 ** 0.5)  # t(0.975, 2) s / sqrt(3)
    assert mean - lo == pytest.approx(hi - mean)
    assert zoo.seed_interval([5.0] * 4) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="at least 3 seeds"):
        zoo.seed_interval([1.0, 2.0])
