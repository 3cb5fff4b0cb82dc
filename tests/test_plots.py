"""Figure functions (adapt.analysis.plots) on hand-made run records: panels, labels, plotted values, files."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from adapt.analysis import plots  # noqa: E402
from adapt.analysis.plots import formats as plot_formats  # noqa: E402
from adapt.models import build_model  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- records
EPOCHS = [0.5, 1.0, 1.5, 2.0, 2.5]


def tiny_record(with_extras=True):
    """4 tensors (3 weights) of a model adapt.models does not know, 5 logged points."""
    names = ["features.conv1.weight", "features.conv1.bias", "layer.shortcut.conv.weight", "fc.weight"]
    wl = [[8, 8, 8, 8], [10, 8, 12, 9], [12, 8, 14, 10], [14, 8, 16, 12], [16, 8, 20, 24]]
    fl = [[4, 4, 4, 4], [6, 4, 8, 5], [7, None, 9, 6], [9, 4, 10, 7], [10, 4, 12, 8]]
    sp = [[0.1, 0.0, 0.2, 0.3], [0.2, 0.0, 0.2, 0.3], [0.3, 0.0, 0.4, 0.3], [0.3, 0.0, 0.4, 0.5],
          [0.4, 0.0, 0.5, 0.5]]
    t = {"interval": 10, "names": names, "numel": [54, 2, 12, 40], "is_weight": [True, False, True, True],
         "step": [0, 10, 20, 30, 40], "epoch": list(EPOCHS), "word_length": wl, "fractional_length": fl,
         "sparsity": sp}
    if with_extras:
        t["lookback"] = [[4, 4, 4, 4], [5, 4, 6, 7], [6, 4, 8, 9], [8, 4, 10, 12], [9, 4, 12, 16]]
        t["resolution"] = [[10, 10, 10, 10], [11, 10, 10, 12], [12, 10, 11, 13], [13, 10, 12, 14],
                           [14, 10, 13, 15]]
    return {"schema": "adapt.run/1", "name": "smoke/adapt/tiny/digits", "status": "completed",
            "config": {"model": "tiny", "dataset": "digits", "method": "adapt", "variant": "reference",
                       "seed": 0, "fold": 0},
            "epochs": curves(3, 0.5), "traces": {"tensors": t}}


def alexnet_record():
    """The real AlexNet's 12 tensors, 5 logged points (so the cost model can price it)."""
    model = build_model("alexnet_cifar", 10, init="torch")
    params = list(model.named_parameters())
    n = len(params)
    wl = [[8 + 2 * i + (j % 3) for j in range(n)] for i in range(5)]
    t = {"interval": 10, "names": [p for p, _ in params], "numel": [v.numel() for _, v in params],
         "is_weight": [v.dim() > 1 for _, v in params], "step": [0, 10, 20, 30, 40], "epoch": list(EPOCHS),
         "word_length": wl, "fractional_length": [[w - 4 for w in row] for row in wl],
         "sparsity": [[0.05 * i] * n for i in range(5)]}
    return {"schema": "adapt.run/1", "name": "smoke/adapt/alexnet_cifar/digits", "status": "completed",
            "config": {"model": "alexnet_cifar", "dataset": "digits", "method": "adapt", "variant": "reference",
                       "seed": 0, "fold": 0, "epochs": 3, "accumulation_steps": 1},
            "epochs": curves(3, 0.6), "traces": {"tensors": t}}


def curves(n, level, with_val=True):
    out = []
    for e in range(n):
        row = {"epoch": e, "lr": 0.1 / (e + 1), "train_loss": 2.0 - 0.3 * e, "train_acc": level + 0.05 * e,
               "test_loss": 2.1 - 0.3 * e, "test_acc": level + 0.04 * e, "steps": 20 * (e + 1)}
        if with_val:
            row.update(val_loss=2.05 - 0.3 * e, val_acc=level + 0.045 * e)
        else:
            row.update(val_loss=None, val_acc=None)
        out.append(row)
    return out


def float32_record(seed=0, with_val=True):
    return {"schema": "adapt.run/1", "name": f"smoke/float32/tiny/digits/{seed}", "status": "completed",
            "config": {"model": "tiny", "dataset": "digits", "method": "float32", "seed": seed, "fold": 0},
            "epochs": curves(4, 0.7 + 0.01 * seed, with_val), "traces": {}}


MUPPET_FIELDS = {
    "epoch": [0, 1, 2, 3, 4, 5],
    "bits": [8, 8, 8, 12, 12, 32],
    "mean_gd": [None, 2.0, 1.5, None, 1.8, None],
    "max_gd": [None, 2.0, 2.0, None, 2.0, None],
    "gd_ratio": [None, 1.0, 2.0 / 1.5, None, 2.0 / 1.8, None],
    "gd_threshold": [None, 1.2, 1.2, None, 1.05, None],
    "gd_violations": [0, 0, 1, 0, 1, 0],
    "switched_to": [None, None, 12, None, 32, None],
}


def muppet_record(short_names=False, in_traces=True):
    fields = dict(MUPPET_FIELDS)
    if short_names:
        fields = {{"gd_ratio": "ratio", "gd_threshold": "threshold", "gd_violations": "violations"}.get(k, k): v
                  for k, v in fields.items()}
    eps = curves(6, 0.6)
    for i, e in enumerate(eps):
        e.update({k: v[i] for k, v in fields.items() if k != "epoch"})
    traces = {}
    if in_traces:
        traces = {"muppet": fields, "switches": [{"epoch": 2, "step": 60, "from_bits": 8, "to_bits": 12},
                                                 {"epoch": 4, "step": 100, "from_bits": 12, "to_bits": 32}]}
    return {"schema": "adapt.run/1", "name": "smoke/muppet/tiny/digits", "status": "completed",
            "config": {"model": "tiny", "dataset": "digits", "method": "muppet", "seed": 0, "fold": 0},
            "epochs": eps, "traces": traces}


def meshes(ax):
    return [c for c in ax.collections if isinstance(c, QuadMesh)]


# --------------------------------------------------------------------------- save / smooth / labels
def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = plots.number_formats_figure()
    paths = plots.save_figure(fig, "formats", directory=tmp_path / "figs")
    assert [p.name for p in paths] == ["formats.png", "formats.pdf"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not [p for p in (tmp_path / "figs").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths)  # readable, not mkstemp's 0600
    # the same figure drawn again gives the same bytes (no dates in the metadata)
    again = plots.save_figure(plots.number_formats_figure(), "formats2", directory=tmp_path / "figs")
    assert again[0].read_bytes() == paths[0].read_bytes()
    assert again[1].read_bytes() == paths[1].read_bytes()
    with pytest.raises(ValueError):
        plots.save_figure(fig, "a/b", directory=tmp_path)


def test_saved_figures_are_byte_identical_and_carry_no_date(tmp_path):
    """Saving the same figure twice gives the same bytes: no date or software tag in PDF or PNG metadata."""
    import time

    records = [named(float32_record(0), "float32"), named(tiny_record(), "adapt", l1_decay=1e-4)]
    first = plots.save_figure(plots.curves_figure(records), "curves", tmp_path / "a")
    time.sleep(1.1)  # a different second: a PDF CreationDate would differ
    second = plots.save_figure(plots.curves_figure(records), "curves", tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    pdf, png = first[1].read_bytes(), first[0].read_bytes()
    assert b"CreationDate" not in pdf and b"ModDate" not in pdf and b"Producer" not in pdf
    assert b"tIME" not in png and b"Software" not in png


def test_save_figure_default_directory_is_figures_root(tmp_path, monkeypatch):
    """No directory: adapt.paths.figures_root() ($ADAPT_FIGURES, else <repo>/figures), whatever the cwd."""
    from adapt import paths

    target = tmp_path / "env-figures"
    monkeypatch.setenv("ADAPT_FIGURES", str(target))
    monkeypatch.chdir(tmp_path)
    saved = plots.save_figure(plots.placeholder_figure("x"), "default-dir")
    assert [p.parent for p in saved] == [target, target]
    assert not (tmp_path / "figures").exists()
    monkeypatch.delenv("ADAPT_FIGURES")
    assert paths.figures_root() == paths.repo_root() / "figures"


def test_smooth_box_and_edges():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.allclose(plots.smooth(y, 1), y)
    assert np.allclose(plots.smooth(y, 3), [1.5, 2.0, 3.0, 4.0, 4.5])
    assert np.allclose(plots.smooth(y, 100), plots.smooth(y, 5))  # window shrinks to the series length
    assert np.allclose(plots.smooth(y, 5), [2.0, 2.5, 3.0, 3.5, 4.0])
    assert np.allclose(plots.smooth(y, 100, max_fraction=0.6), plots.smooth(y, 3))  # ... or a fraction of it
    assert np.allclose(plots.smooth(y, 100, max_fraction=0.1), y)
    assert np.allclose(plots.smooth([1.0, np.nan, 3.0], 3), [1.0, 2.0, 3.0])
    assert plots.smooth([], 50).shape == (0,)


def test_layer_labels_from_model_and_from_names():
    resnet = build_model("resnet20", 10, init="torch")
    names = [n for n, _ in resnet.named_parameters()]
    labels = plots.layer_labels(names, "resnet20")
    weights = [lab for lab, (_, p) in zip(labels, resnet.named_parameters()) if p.dim() > 1]
    assert weights[0] == "C1" and weights[-1] == "L1"
    assert weights.count("D1") == 1 and weights.count("D2") == 1
    assert sum(w.startswith("C") for w in weights) == 19
    assert labels[1:3] == ["BN1", "BN1.b"]
    alex = [n for n, _ in build_model("alexnet_cifar", 10, init="torch").named_parameters()]
    assert plots.layer_labels(alex, "alexnet_cifar") == ["C1", "C1.b", "C2", "C2.b", "C3", "C3.b", "C4", "C4.b",
                                                         "C5", "C5.b", "L1", "L1.b"]
    # unknown model: labels from the module names
    assert plots.layer_labels(tiny_record()["traces"]["tensors"]["names"], "tiny") == ["C1", "C1.b", "D1", "L1"]
    assert plots.layer_labels(["blk.bn2.weight", "head.weight", "mystery.weight"]) == ["BN1", "L1", "T1"]


# --------------------------------------------------------------------------- teaching figures
def test_number_formats_figure():
    fig = plots.number_formats_figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    row_labels = [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"]
    assert row_labels == ["float32", "fixed point <8, 4>", "block floating point", "int8"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"sign", "exponent", "mantissa", "integer", "fraction", "shared exponent"} <= set(legend)
    boxes = [p for p in ax.patches]
    assert len(boxes) == 32 + 8 + (8 + 4 * 8) + 8
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("$2.6875 = 43 \\times 2^{-4}$") for t in texts)
    assert any("binary point" in t for t in texts)


def test_float32_and_fixed_bits_of_the_example():
    assert plot_formats._float32_bits(2.6875) == "0" + "10000000" + "01011" + "0" * 18
    assert plot_formats._twos(43, 8) == "00101011" and plot_formats._twos(-40, 8) == "11011000"


def test_rounding_figure_unbiased():
    fig = plots.rounding_figure(n_points=101, n_draws=4000, seed=1)
    assert len(fig.axes) == 2
    left, right = fig.axes
    lines = {line.get_label(): line for line in left.get_lines()}
    x = lines["input x"].get_xdata()
    nearest = lines["nearest"].get_ydata()
    assert set(np.round(nearest / 0.25, 6)) <= set(np.arange(-4, 5, dtype=float))  # on the grid
    assert np.abs(nearest - x).max() <= 0.125 + 1e-6
    mean = lines["stochastic (mean of 4000)"].get_ydata()
    assert np.abs(mean - x).max() < 0.03  # unbiased up to sampling noise
    err = {line.get_label(): line for line in right.get_lines()}["stochastic: E[q(x)] - x"].get_ydata()
    assert abs(err.mean()) < 0.005


def test_quantization_error_table_and_figure():
    torch.manual_seed(0)
    x = torch.randn(500)
    table = plots.quantization_error_table(x, range(2, 9), range(0, 7))
    assert table.shape == (7, 7)
    q = x.clone().mul(2 ** 3).round().clamp(-(2 ** 7), 2 ** 7 - 1).div(2 ** 3)
    assert table.loc[3, 8] == pytest.approx(float(((q - x) ** 2).mean().sqrt()), rel=1e-6)
    fig = plots.quantization_error_figure(x, range(2, 9), range(0, 7), curves=(4, 8))
    assert len(fig.axes) == 3  # heatmap, its colour bar, curves
    heat, curves_ax = fig.axes[0], fig.axes[1]
    data = meshes(heat)[0].get_array()
    assert data.shape == (7, 7)
    assert np.allclose(data, np.log10(table.to_numpy()))
    assert [line.get_label() for line in curves_ax.get_lines()] == ["WL = 4", "WL = 8"]
    assert curves_ax.get_yscale() == "log"


def test_information_loss_figure():
    fls = [4, 5, 6, 7, 8]
    losses = {"reference": [0.3, 0.1, 0.0, 0.0, -0.01], "corrected": [2e-2, 5e-3, 1e-4, 0.0, 0.0]}
    fig = plots.information_loss_figure(fls, losses, chosen={"reference": 6}, word_length=12)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["reference", "corrected"]
    assert "WL = 12" in fig.get_suptitle()
    ref = fig.axes[0]
    assert np.allclose(ref.get_lines()[0].get_ydata(), losses["reference"])
    assert "chosen FL = 6" in [line.get_label() for line in ref.get_lines()]
    with pytest.raises(ValueError):
        plots.information_loss_figure(fls, {"reference": [1, 2]})


def test_information_loss_scan_is_the_two_policies_tests_and_its_caption_reads_its_numbers():
    from adapt import heuristic

    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    scan = plots.information_loss_scan(w, word_length=12, fractional_lengths=range(4, 10), resolution=20,
                                       repeats=3, seed=5, coarse_resolution=6)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    for k, fl in enumerate(range(4, 10)):  # each number is the heuristic's own call with the stated seed
        assert scan.released[k] == heuristic.information_loss(w[0], 12, fl, 20, "reference", gen(5))
        assert scan.released_coarse[k] == heuristic.information_loss(w[0], 12, fl, 6, "reference", gen(5))
        assert [scan.corrected[k, r] for r in range(3)] == [
            heuristic.information_loss(w, 12, fl, 20, "corrected", gen(5 + r)) for r in range(3)]
    assert scan.threshold == heuristic.loss_free_threshold(w.numel(), 20, heuristic.KL_ALPHA)
    assert (scan.n_first, scan.n_all, scan.repeats) == (36, 216, 3)
    table = scan.table
    assert list(table.index) == list(range(4, 10))
    assert np.allclose(table["G = 2n·D_KL, median"], 2 * 216 * np.median(scan.corrected, axis=1))
    assert list(table["draws lossy (G-test)"]) == [f"{int((row > scan.threshold).sum())}/3" for row in scan.corrected]
    assert scan.formatted_table()["released, res = 20"].str.match(r"^[+-]\d\.\d{3}e[+-]\d\d$").all()
    fig = scan.figure
    left, right = fig.axes
    assert np.allclose(left.get_lines()[0].get_ydata(), scan.released)
    assert left.get_yscale() == "symlog" and right.get_yscale() == "log"
    assert "WL = 12" in fig.get_suptitle() and "20 histogram bins" in fig.get_suptitle()
    dashed = [ln for ln in right.get_lines() if ln.get_label().startswith("G-test threshold")]
    assert dashed and dashed[0].get_ydata()[0] == pytest.approx(scan.threshold)
    caption = scan.caption()
    assert f"n = {w.numel()} values" in caption and f"{scan.threshold:.2e}" in caption
    assert f"{scan.released.max():+.3g}" in caption
    with pytest.raises(ValueError, match="repeats"):
        plots.information_loss_scan(w, repeats=0)
    with pytest.raises(ValueError, match="torch.Tensor"):
        plots.information_loss_scan(np.zeros(4))


def test_lookback_figure_draws_the_given_series_and_marks_the_switches():
    fig = plots.lookback_figure([0, 1, 2, 3], [5, 6, 4, 5], [1, 2, 0, 1], switches=[2], min_lookback=3, tensor="T")
    ax = fig.axes[0]
    by_label = {line.get_label(): line for line in ax.get_lines()}
    assert np.allclose(by_label["lookback LB of T"].get_ydata(), [5, 6, 4, 5])
    assert np.allclose(by_label["buffered gradients r (after the step)"].get_ydata(), [1, 2, 0, 1])
    assert by_label["switch"].get_xdata()[0] == 2 and by_label["MIN_LB"].get_ydata()[0] == 3
    assert ax.get_title() == "Lookback and gradient buffer of T, step by step"
    with pytest.raises(ValueError, match="differ in length"):
        plots.lookback_figure([0, 1], [5], [1, 2])


# --------------------------------------------------------------------------- heatmaps
def test_heatmap_values_labels_and_shape():
    rec = tiny_record()
    fig = plots.heatmap(rec, "word_length")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap + colour bar
    assert [t.get_text() for t in ax.get_yticklabels()] == ["C1", "D1", "L1"]
    data = meshes(ax)[0].get_array()
    assert data.shape == (3, 5)  # (#weight tensors, #points)
    wl = np.array(rec["traces"]["tensors"]["word_length"], dtype=float).T[[0, 2, 3]]
    assert np.array_equal(np.asarray(data), wl)
    assert meshes(ax)[0].get_cmap().name == "coolwarm"
    # x: cells start at the logged epochs, the last spans one more spacing
    coords = meshes(ax)[0].get_coordinates()
    assert np.allclose(coords[0, :, 0], EPOCHS + [3.0])
    assert ax.get_xlabel() == "epoch"
    assert "word length" in ax.get_title()


def test_heatmap_all_tensors_and_missing_values():
    rec = tiny_record()
    fig = plots.heatmap(rec, "fractional_length", weights_only=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["C1", "C1.b", "D1", "L1"]
    data = meshes(ax)[0].get_array()
    assert data.shape == (4, 5)
    assert np.ma.is_masked(data) and data.mask[1, 2]  # the None in the trace
    assert data[0, 4] == 10


def test_heatmap_memory_key_and_into_given_axes():
    rec = tiny_record()
    fig, ax = plt.subplots()
    out = plots.heatmap(rec, "memory", ax=ax, colorbar=False, title="m")
    assert out is fig and len(fig.axes) == 1 and ax.get_title() == "m"
    data = np.asarray(meshes(ax)[0].get_array())
    assert data[0, 0] == pytest.approx((1 - 0.1) * 8 / 32)
    with pytest.raises(KeyError):
        plots.heatmap(rec, "nonexistent")
    with pytest.raises(ValueError):
        plots.heatmap(float32_record())


def test_heatmaps_figure_skips_missing_keys():
    fig = plots.heatmaps_figure(tiny_record())
    heat_axes = fig.axes[:5]  # the panels; the colour bars come after them
    assert all(meshes(ax) for ax in heat_axes)
    assert [ax.get_title() for ax in heat_axes] == [plots.TRACE_KEYS[k] for k in
                                                    ("word_length", "fractional_length", "lookback", "resolution",
                                                     "sparsity")]
    assert len(fig.axes) == 10  # five panels + five colour bars
    assert fig.get_suptitle() == ("Per-layer trace over training (rows: weight tensors, columns: logged steps)\n"
                                  "AdaPT (reference heuristic), tiny, digits, seed 0")
    fig = plots.heatmaps_figure(tiny_record(with_extras=False))
    assert len(fig.axes) == 6  # three panels (no lookback / resolution in a fixed-policy trace), three colour bars
    with pytest.raises(ValueError):
        plots.heatmaps_figure(tiny_record(), keys=("lookback_x",))
    rec = tiny_record()  # a MuPPET-like trace: dynamic fixed point has no fractional length
    rec["traces"]["tensors"]["fractional_length"] = [[None] * 4 for _ in range(5)]
    fig = plots.heatmaps_figure(rec, keys=("word_length", "fractional_length"))
    assert [ax.get_title() for ax in fig.axes[:1]] == ["word length (bits)"] and len(fig.axes) == 2


def test_heatmap_labels_real_model():
    fig = plots.heatmap(alexnet_record())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["C1", "C2", "C3", "C4", "C5", "L1"]
    assert fig.axes[0].get_title() == "word length (bits) per layer: AdaPT (reference heuristic), AlexNet, digits, seed 0"


def test_run_titles_name_the_variant_so_two_variants_never_share_a_title():
    """Issue 24: the two mnist5k heatmaps were both titled "AdaPT lenet5 mnist5k"."""
    ref, cor = alexnet_record(), alexnet_record()
    cor["config"]["variant"] = "corrected"
    titles = {plots.heatmaps_figure(r).get_suptitle() for r in (ref, cor)}
    assert len(titles) == 2 and any("corrected heuristic" in t for t in titles)
    assert plots.run_title(float32_record(seed=3)) == "float32, tiny, digits, seed 3"
    assert plots.run_title(ref, method=False, seed=False) == "AlexNet, digits"
    lenet = {"config": {"method": "adapt", "variant": "corrected", "model": "lenet5", "dataset": "mnist5k", "seed": 0}}
    assert plots.run_title(lenet) == "AdaPT (corrected heuristic), LeNet-5, mnist5k, seed 0"


# --------------------------------------------------------------------------- sparsity / memory / cost
def test_memory_requirement_hand_computed():
    epochs, sp, mem = plots.memory_requirement(tiny_record())
    assert np.allclose(epochs, EPOCHS)
    assert sp[0] == pytest.approx(0.15)
    assert mem[0] == pytest.approx(1 + (1 - 0.15) * 8 / 32)  # 1.2125
    # last point: WL 16, 8, 20, 24 (mean 17), sparsity 0.4, 0, 0.5, 0.5 (mean 0.35)
    assert mem[-1] == pytest.approx(1 + 0.65 * 17 / 32)
    _, sp_w, mem_w = plots.memory_requirement(tiny_record(), weights_only=True)
    assert mem_w[0] == pytest.approx(1 + (1 - 0.2) * 8 / 32)


def test_sparsity_memory_cost_figure_values():
    rec = alexnet_record()
    fig = plots.sparsity_memory_cost_figure(rec, windows=(1, 1, 1))
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["Mean weight sparsity", "Weight memory: FP32 master + quantized copy",
                                                   "Training cost / float32 (released cost model)"]
    assert fig.axes[1].get_ylabel() == "1 + (1 − sp) · WL / 32"
    assert any("more memory than float32" in t.get_text() for t in fig.axes[1].texts)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["float32 training (one FP32 copy)"]
    assert fig.get_suptitle().startswith("Sparsity, memory and training cost")
    sp_ax, mem_ax, cost_ax = fig.axes
    smoothed = [line for line in mem_ax.get_lines() if line.get_label() == "AdaPT"][0]
    _, sp, mem = plots.memory_requirement(rec)
    assert np.allclose(smoothed.get_ydata(), mem)
    wl0 = np.array(rec["traces"]["tensors"]["word_length"][0], dtype=float)
    assert smoothed.get_ydata()[0] == pytest.approx(1 + 1.0 * wl0.mean() / 32)
    assert np.allclose([line for line in sp_ax.get_lines() if line.get_label() == "AdaPT"][0].get_ydata(),
                       [0.0, 0.05, 0.1, 0.15, 0.2])
    from adapt.costmodel import trace_costs

    costs = trace_costs(rec, "reference")
    cost_line = [line for line in cost_ax.get_lines() if line.get_label() == "AdaPT"][0]
    assert np.allclose(cost_line.get_ydata(), costs["cost_q"] / costs["cost_fp32"])
    assert (cost_line.get_ydata() < 1).all()


def test_sparsity_memory_cost_figure_smoothing_and_missing_cost():
    rec = tiny_record()  # model "tiny": no cost model
    with pytest.warns(UserWarning, match="computational-cost"):
        fig = plots.sparsity_memory_cost_figure([rec, float32_record()], windows=(100, 3, 50), max_fraction=1.0)
    sp_ax, mem_ax, cost_ax = fig.axes
    lines = [line for line in mem_ax.get_lines() if line.get_label() == "AdaPT"]
    _, _, mem = plots.memory_requirement(rec)
    assert np.allclose(lines[0].get_ydata(), plots.smooth(mem, 3))
    assert [line.get_label() for line in cost_ax.get_lines()] == ["float32 training"]  # only the reference line
    assert any("unavailable" in t.get_text() for t in cost_ax.texts)
    # precomputed costs are used as given
    frame = pd.DataFrame({"epoch": EPOCHS, "cost_q": [1, 2, 3, 4, 5], "cost_fp32": [10] * 5})
    fig = plots.sparsity_memory_cost_figure(rec, windows=(1, 1, 1), costs=[frame])
    cost = [line for line in fig.axes[2].get_lines() if line.get_label() == "AdaPT"][0]
    assert np.allclose(cost.get_ydata(), [0.1, 0.2, 0.3, 0.4, 0.5])


def test_corrected_memory_is_the_cost_models_training_state_and_its_mean_the_tables_footprint():
    """memory="corrected" draws trace_costs' memory column; its step-weighted mean is run_figures' footprint."""
    from adapt.costmodel import run_figures, trace_costs

    rec = alexnet_record()
    rec["config"].update(momentum=0.9, batch_size=8)
    fig = plots.sparsity_memory_cost_figure(rec, windows=(1, 1, 1), variant="corrected", memory="corrected")
    sp_ax, mem_ax, cost_ax = fig.axes
    assert mem_ax.get_title() == "Training memory (corrected cost model)"
    assert cost_ax.get_title() == "Training cost / float32 (corrected cost model)"
    costs = trace_costs(rec, "corrected")
    line = [ln for ln in mem_ax.get_lines() if ln.get_label() == "AdaPT"][0]
    assert np.allclose(line.get_ydata(), costs["memory"])
    # by hand, first point: every tensor at WL < 32 holds a 32-bit master, WL-bit weights and gradients and a
    # 32-bit momentum buffer; float32 training holds 32-bit weights, gradients and momentum
    t = rec["traces"]["tensors"]
    numel, wl = np.array(t["numel"], float), np.array(t["word_length"][0], float)
    assert line.get_ydata()[0] == pytest.approx(((32 + 2 * wl + 32) * numel).sum() / (96 * numel.sum()))
    w = costs["weight"].to_numpy()
    assert run_figures(rec, "corrected")["memory_footprint"] == pytest.approx((w * costs["memory"]).sum() / w.sum())
    epochs, mem = plots.memory_curve(rec, "official")
    assert np.allclose(mem, plots.memory_requirement(rec)[2]) and np.allclose(epochs, EPOCHS)
    with pytest.raises(ValueError, match="memory must be one of"):
        plots.sparsity_memory_cost_figure(rec, memory="weights")
    with pytest.raises(ValueError, match="variant must be one of"):
        plots.sparsity_memory_cost_figure(rec, variant="released")
    with pytest.raises(ValueError, match="definition must be one of"):
        plots.memory_curve(rec, "peak")


def test_sparsity_memory_cost_figure_no_traces():
    fig = plots.sparsity_memory_cost_figure([float32_record()])
    assert len(fig.axes) == 3
    assert any("no run" in t.get_text() for t in fig.axes[0].texts)


# --------------------------------------------------------------------------- word-length bars
def test_word_length_counts_and_bars():
    a, b = tiny_record(), alexnet_record()
    table = plots.word_length_counts([a, float32_record(), b], labels=["tiny", "fp", "alex"])
    assert list(table.index) == ["tiny", "alex"]  # runs without a trace are skipped
    # tiny final weights: 16, 20, 24
    assert table.loc["tiny", "WL < 32"] == 3 and table.loc["tiny", "WL < 24"] == 2
    assert table.loc["tiny", "WL < 18"] == 1 and table.loc["tiny", "WL < 16"] == 0
    assert table.loc["tiny", "tensors"] == 3
    fig = plots.word_length_bars([a, float32_record(), b], labels=["tiny", "fp", "alex"])
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny", "alex"]
    # the top of each threshold's segment is the official count of WL < t
    containers = ax.containers
    assert len(containers) == len(plots.WL_THRESHOLDS) + 1
    ts = sorted(plots.WL_THRESHOLDS)
    for t, cont in zip(ts, containers):
        tops = [r.get_y() + r.get_height() for r in cont]
        assert np.allclose(tops, table[f"WL < {t}"].to_numpy())
    totals = [r.get_y() + r.get_height() for r in containers[-1]]
    assert np.allclose(totals, table["tensors"])
    assert "WL < 12" in [t.get_text() for t in ax.get_legend().get_texts()]


# --------------------------------------------------------------------------- MuPPET
@pytest.mark.parametrize("short_names,in_traces", [(False, True), (True, False), (False, False)])
def test_muppet_trace_figure(short_names, in_traces):
    rec = muppet_record(short_names, in_traces)
    frame = plots.muppet_epochs(rec)
    assert list(frame["bits"]) == [8, 8, 8, 12, 12, 32]
    assert frame["ratio"].iloc[2] == pytest.approx(2.0 / 1.5)
    fig = plots.muppet_trace_figure(rec)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    step = top.get_lines()[0]
    assert np.allclose(step.get_xdata(), [0, 1, 2, 3, 4, 5, 6])
    assert np.allclose(step.get_ydata(), [8, 8, 8, 8, 12, 12, 16])  # float32 drawn 4 above 12
    assert [t.get_text() for t in top.get_yticklabels()] == ["8", "12", "FP32"]
    labels = [line.get_label() for line in bottom.get_lines()]
    assert "maxGD / meanGD" in labels and "threshold T(e)" in labels and "violation" in labels
    viol = [line for line in bottom.get_lines() if line.get_label() == "violation"][0]
    assert np.allclose(viol.get_xdata(), [3, 5])  # epochs 2 and 4 (0-based) violated
    # switches after epochs 2 and 4: dashed lines at x = 3 and 5 in both panels
    vlines = [line for line in top.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in vlines) == [3, 5]
    assert fig.get_suptitle().startswith("MuPPET's precision switches\nMuPPET")
    assert "T(e)" in bottom.get_title() and "bit width" in top.get_title()


def test_muppet_trace_figure_static_schedule():
    rec = muppet_record(in_traces=False)
    for e in rec["epochs"]:
        for k in ("mean_gd", "max_gd", "gd_ratio", "gd_threshold", "gd_violations"):
            e.pop(k)
    fig = plots.muppet_trace_figure(rec)
    assert len(fig.axes) == 2
    assert any("no gradient-diversity" in t.get_text() for t in fig.axes[1].texts)
    rec = {"config": {"method": "muppet"}, "epochs": [{"epoch": 0, "test_acc": 0.5}]}
    fig = plots.muppet_trace_figure(rec)
    assert any("no per-epoch bits" in t.get_text() for t in fig.axes[0].texts)


# --------------------------------------------------------------------------- learning curves
def test_curves_figure():
    recs = [float32_record(0), float32_record(1, with_val=False), muppet_record(), tiny_record()]
    fig = plots.curves_figure(recs)
    assert len(fig.axes) == 2
    acc, loss = fig.axes
    assert acc.get_title() == "Accuracy" and loss.get_title() == "Loss"
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert legend == ["float32 (AdaPT's baseline)", "MuPPET", "AdaPT (reference)", "test", "val", "train"]
    # float32 seed 0: val + test; seed 1: test only (val None); MuPPET, AdaPT: val + test
    assert len(acc.get_lines()) == 2 + 1 + 2 + 2
    first = acc.get_lines()[0]
    assert np.allclose(first.get_xdata(), [1, 2, 3, 4])
    assert np.allclose(first.get_ydata(), [e["val_acc"] for e in float32_record(0)["epochs"]])
    assert first.get_color() == plots.METHOD_COLORS["float32"]
    assert len(loss.get_lines()) == 7 + 4  # plus one train-loss curve per run
    assert loss.get_yscale() == "log" and "log scale" in loss.get_ylabel()
    fig = plots.curves_figure(recs[:1], show_lr=True, show_train_loss=False)
    assert len(fig.axes) == 3 and fig.axes[2].get_yscale() == "log"
    assert plots.curves_figure(recs[:1], log_loss=False).axes[1].get_yscale() == "linear"


def named(record, method, variant="reference", l1_decay=0.0):
    """``record`` as a run of a config named ``smoke/<method>/tiny/digits`` (config method float32 for both baselines)."""
    r = dict(record)
    r["name"] = f"smoke/{method}/tiny/digits"
    r["config"] = {**record["config"], "name": r["name"], "method": "float32" if method.startswith("float32") else method,
                   "variant": variant, "l1_decay": l1_decay}
    return r


def test_curves_figure_tells_the_two_float32_baselines_and_the_adapt_variants_apart():
    recs = [named(float32_record(0), "float32"), named(float32_record(1), "float32-muppet"),
            named(tiny_record(), "adapt", l1_decay=1e-4), named(tiny_record(), "adapt", "corrected", 1e-4)]
    recs[1]["epochs"][0]["val_loss"] = 400.0  # a spike: on a log axis it does not flatten the rest
    fig = plots.curves_figure(recs)
    acc, loss = fig.axes
    legend = {t.get_text(): h.get_color() for t, h in zip(acc.get_legend().get_texts(), acc.get_legend().legend_handles)}
    assert list(legend)[:4] == ["float32 (AdaPT's baseline)", "float32 (MuPPET's baseline)", "AdaPT (reference)",
                                "AdaPT (corrected)"]
    assert len({legend[k] for k in list(legend)[:4]}) == 4  # four colours
    assert acc.get_lines()[0].get_color() != acc.get_lines()[2].get_color()  # float32 vs float32-muppet lines
    assert loss.get_yscale() == "log"
    note = fig.get_supxlabel().replace("\n", " ")
    assert "cross-entropy + l1_decay·Σ|w|" in note and "AdaPT: l1_decay = 0.0001" in note
    assert "precision penalty is not included" in note
    plain = plots.curves_figure([named(float32_record(0), "float32")]).get_supxlabel()
    assert "no L1 term" in plain and "precision penalty" not in plain


def test_train_loss_note_matches_what_the_training_loop_adds():
    """The loop adds l1_decay * l1_penalty(model) to the cross-entropy and records that; no precision penalty."""
    import inspect

    from adapt import train

    import torch

    source = inspect.getsource(train)
    assert "loss = loss + l1_value" in source  # the recorded loss is CE plus the step's L1 value
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    l1 = train.L1Gradient(model, 1e-4, accumulation_steps=2)
    try:
        assert torch.equal(l1.begin_step(), 1e-4 * train.l1_penalty(model))  # l1_decay * sum |w|
    finally:
        l1.remove()
    assert "loss_penalty" not in source  # AdaPT's precision penalty never enters the recorded loss


# --------------------------------------------------------------------------- results bars
def test_results_bar_figure():
    frame = pd.DataFrame({
        "model": ["alexnet_cifar"] * 4 + ["resnet20"] * 2,
        "dataset": ["cifar10"] * 6,
        "method": ["float32", "float32", "adapt", "adapt", "float32", "adapt"],
        "test_acc": [0.70, 0.72, 0.73, 0.75, 0.80, 0.81],
    })
    fig = plots.results_bar_figure(frame, "test_acc", reference=0.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["AlexNet CIFAR-10", "ResNet-20 CIFAR-10"]
    heights = [[r.get_height() for r in c] for c in ax.containers if hasattr(c, "patches")]
    assert np.allclose(heights[0], [0.71, 0.80]) and np.allclose(heights[1], [0.74, 0.81])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["float32", "AdaPT"]
    with pytest.raises(KeyError):
        plots.results_bar_figure(frame, "speedup")


def test_results_bar_figure_keeps_adapt_variants_and_float32_baselines_apart():
    """The smoke figure averaged AdaPT's reference (63.19) and corrected (34.58) runs into one 48.9 bar."""
    frame = pd.DataFrame({
        "model": ["alexnet_cifar"] * 6, "dataset": ["digits"] * 6,
        "method": ["float32", "float32-muppet", "adapt", "adapt", "adapt", "adapt"],
        "variant": ["reference"] * 2 + ["reference", "reference", "corrected", "corrected"],
        "test_acc_pct": [82.0, 63.0, 66.0, 60.0, 44.0, 25.0],
    })
    ax = plots.results_bar_figure(frame, "test_acc_pct").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["float32 (AdaPT's baseline)", "float32 (MuPPET's baseline)", "AdaPT (reference)",
                      "AdaPT (corrected)"]
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    assert np.allclose([c.patches[0].get_height() for c in bars], [82.0, 63.0, 63.0, 34.5])
    assert len({c.patches[0].get_facecolor() for c in bars}) == 4
    empty = plots.results_bar_figure(frame.iloc[:0], "test_acc_pct", title="nothing")
    assert any("no rows" in t.get_text() for t in empty.axes[0].texts)


def test_placeholder_figure_says_why():
    fig = plots.placeholder_figure("no completed runs in the 'quick' profile", title="accuracy")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no completed runs in the 'quick' profile"]
    assert fig.axes[0].get_title() == "accuracy"


def test_functions_return_figures_without_showing(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: (_ for _ in ()).throw(AssertionError("plt.show called")))
    figs = [plots.number_formats_figure(), plots.heatmaps_figure(tiny_record()),
            plots.curves_figure([float32_record()]), plots.muppet_trace_figure(muppet_record()),
            plots.word_length_bars([tiny_record()])]
    assert all(isinstance(f, Figure) for f in figs)
    assert plt.get_fignums() == []  # made without pyplot: nothing accumulates in a notebook loop
    # the global style is untouched (whitegrid applies inside the functions only)
    assert matplotlib.rcParams["axes.grid"] == matplotlib.rcParamsDefault["axes.grid"]
