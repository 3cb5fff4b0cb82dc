"""adapt.analysis.interactive: the static views against NumPy/scipy references and against push_down's own
record of its probes, the widgets' controls, and the rule that picks static under papermill and nbval."""
import sys

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402

from adapt import heuristic
from adapt.analysis import interactive  # noqa: E402
from adapt.quant import fixed_point  # noqa: E402

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(interactive.ENV_VAR, raising=False)


def weights(shape=(24, 4, 5, 5), scale=0.6, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def numpy_nearest(w, wl, fl):
    """Signed saturating fixed point, round half to even, in float64 NumPy (docs/method.md §1.3)."""
    codes = np.clip(np.rint(np.asarray(w, dtype=np.float64) * 2.0 ** fl), -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1)
    return codes * 2.0 ** -fl


def stairs(fig, label_start):
    found = [p for p in fig.axes[0].patches if isinstance(p, StepPatch) and p.get_label().startswith(label_start)]
    assert len(found) == 1, [p.get_label() for p in fig.axes[0].patches]
    values, edges, _ = found[0].get_data()
    return np.asarray(values), np.asarray(edges)


# ----------------------------------------------------------------------------- the static quantization view
@pytest.mark.parametrize("wl, fl, res", [(8, 4, 100), (4, 2, 37), (6, 5, 50), (12, 10, 80), (3, 0, 20)])
def test_static_histograms_are_numpy_histograms_of_w_and_its_nearest_quantization(wl, fl, res):
    w = weights()
    view = interactive.quantization_explorer(w, wl, fl, resolution=res, interactive=False)
    assert isinstance(view, interactive.QuantizationView)
    wn = w.numpy().astype(np.float64).ravel()
    qn = numpy_nearest(wn, wl, fl)
    lo, hi = min(wn.min(), qn.min()), max(wn.max(), qn.max())
    expected_q, expected_edges = np.histogram(qn, bins=res, range=(lo, hi))
    expected_w, _ = np.histogram(wn, bins=res, range=(lo, hi))
    q_counts, q_edges = stairs(view.figure, "quantized")
    w_counts, w_edges = stairs(view.figure, "float32")
    np.testing.assert_array_equal(q_counts, expected_q)
    np.testing.assert_array_equal(w_counts, expected_w)
    np.testing.assert_allclose(q_edges, expected_edges, rtol=0, atol=0)
    np.testing.assert_allclose(w_edges, expected_edges, rtol=0, atol=0)
    assert q_counts.sum() == w.numel()
    # The error figures, from the same reference.
    s = view.stats
    step, top = 2.0 ** -fl, 2.0 ** (wl - fl - 1)
    assert (s["step"], s["min"], s["max"]) == (step, -top, top - step)
    assert s["RMS error"] == pytest.approx(np.sqrt(np.mean((qn - wn) ** 2)), rel=1e-12)
    assert s["max |error|"] == pytest.approx(np.abs(qn - wn).max(), rel=1e-12)
    assert s["outside range"] == np.mean((wn < -top) | (wn > top - step))
    assert s["rounded to 0"] == np.mean((qn == 0) & (wn != 0))


def test_saturation_and_underflow_are_counted():
    # 1000 values at 3.0 and 1000 at 0.01 in FixedPoint(4, 2): range [-2, 1.75], step 0.25:
    # 3.0 saturates to 1.75, 0.01 rounds to 0.  Half outside the range, half rounded to 0.
    w = torch.cat([torch.full((1000,), 3.0), torch.full((1000,), 0.01)])
    s = interactive.quantization_view(w, 4, 2).stats
    assert s["outside range"] == 0.5 and s["rounded to 0"] == 0.5
    assert s["max |error|"] == pytest.approx(1.25)


def test_static_tests_are_the_policies_information_loss_tests():
    from scipy.stats import chi2

    w, res, seed = weights(), 60, 3
    view = interactive.quantization_view(w, 10, 6, resolution=res, seed=seed)
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    ref = view.tests.loc["reference"]
    # Released: the first slice w[0], the released expression, threshold 0.
    assert ref["tested"] == "w[0]" and ref["values"] == w[0].numel()
    assert ref["test value"] == heuristic.information_loss(w[0], 10, 6, res, "reference", gen())
    assert ref["threshold"] == 0.0 and ref["loss-free"] == (not ref["test value"] > 0)
    cor = view.tests.loc["corrected"]
    # Corrected: D_KL on the whole tensor against the G-test scale chi2.isf(0.05, k - 1) / (2 n).
    assert cor["tested"] == "w" and cor["values"] == w.numel()
    assert cor["test value"] == heuristic.information_loss(w, 10, 6, res, "corrected", gen())
    assert cor["threshold"] == pytest.approx(chi2.isf(0.05, res - 1) / (2 * w.numel()), rel=1e-12)
    assert cor["loss-free"] == (cor["test value"] <= cor["threshold"])


def test_a_representable_tensor_is_loss_free_and_an_overflowing_format_is_not():
    # Multiples of 2^-3 in [-1, 1] are exact at FL >= 3 (stochastic rounding leaves them as they are):
    # D_KL = 0 <= threshold.  At WL = 3, FL = 3 the range is [-0.5, 0.375]: saturation, lossy.
    w = (torch.arange(-8, 9, dtype=torch.float32) / 8).repeat(40, 1)
    free = interactive.quantization_view(w, 8, 3, resolution=17).tests.loc["corrected"]
    assert free["test value"] == pytest.approx(0.0, abs=1e-12) and free["loss-free"]
    lossy = interactive.quantization_view(w, 3, 3, resolution=17).tests.loc["corrected"]
    assert lossy["test value"] > lossy["threshold"] and not lossy["loss-free"]


def test_stochastic_rounding_view_is_seeded_and_reproducible():
    w = weights()
    a = interactive.quantization_view(w, 6, 4, rounding="stochastic", seed=5)
    b = interactive.quantization_view(w, 6, 4, rounding="stochastic", seed=5)
    c = interactive.quantization_view(w, 6, 4, rounding="stochastic", seed=6)
    np.testing.assert_array_equal(a.quantized_counts, b.quantized_counts)
    assert not np.array_equal(a.quantized_counts, c.quantized_counts)
    q = fixed_point(w, 6, 4, "stochastic", torch.Generator().manual_seed(5)).numpy().astype(np.float64)
    lo = min(w.min().item(), q.min())
    hi = max(w.max().item(), q.max())
    np.testing.assert_array_equal(a.quantized_counts, np.histogram(q, bins=100, range=(lo, hi))[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(w=[0.1, 0.2]), "floating-point torch.Tensor"),
    (dict(w=torch.tensor([1.0, float("nan")])), "finite"),
    (dict(word_length=0), "word_length"),
    (dict(fractional_length=33), "fractional_length"),
    (dict(rounding="up"), "rounding must be one of"),
    (dict(resolution=0), "resolution"),
    (dict(interactive="yes"), "interactive must be"),
])
def test_bad_explorer_arguments_are_named(kwargs, message):
    args = dict(w=weights(), word_length=8, fractional_length=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        interactive.quantization_explorer(**args)


# ----------------------------------------------------------------------------- the PushDown stepper
def policy_probes(w, wl, fl, res, variant, seed, **overrides):
    """What AdaptPolicy._switch does, with push_down's own record of its probes."""
    opts = heuristic.VARIANT_OPTIONS[variant]
    tested = w[0] if opts["test_slice"] == "first" else w
    kwargs = dict(threshold=opts["kl_threshold"], generator=torch.Generator().manual_seed(seed))
    kwargs.update(overrides)
    record = []
    result = heuristic.push_down(tested, wl, fl, res, variant, record=record, **kwargs)
    return record, result


@pytest.mark.parametrize("variant", heuristic.VARIANTS)
@pytest.mark.parametrize("start", [(16, 12), (8, 4), (24, 16), (12, 8)])
def test_stepper_probes_are_exactly_the_probes_push_down_makes(variant, start):
    w = weights(scale=0.05)
    view = interactive.pushdown_stepper(w, *start, 50, variant, seed=1, interactive=False)
    record, result = policy_probes(w, *start, 50, variant, seed=1)
    assert view.probes.to_dict("records") == record
    assert view.result == result and view.start == start
    assert list(view.probes.index) == list(range(1, len(record) + 1))
    assert view.tested == ("w[0]" if variant == "reference" else "w")


def test_stepper_passes_push_down_overrides_through():
    w = weights(scale=0.05)
    over = dict(bisection_return="lower", probe="lo", threshold=0.0, fl_floor=2)
    view = interactive.pushdown_view(w, 16, 12, 40, "corrected", seed=2, **over)
    record, result = policy_probes(w, 16, 12, 40, "corrected", seed=2, **over)
    assert view.probes.to_dict("records") == record and view.result == result
    with pytest.raises(ValueError, match="unknown push_down arguments"):
        interactive.pushdown_view(w, 16, 12, 40, "corrected", wordlength=3)
    with pytest.raises(ValueError, match="variant must be one of"):
        interactive.pushdown_view(w, 16, 12, 40, "fixed")


def test_stepper_figure_and_sentence_show_the_probe_on_show():
    w = weights(scale=0.05)
    view = interactive.pushdown_view(w, 16, 12, 50, "corrected")
    n = len(view.probes)
    assert n >= 2
    step = view.at(2)
    p = view.probes.iloc[1]
    text = step.sentence()
    assert f"Probe 2/{n}" in text and f"({p['word_length']}, {p['fractional_length']})" in text
    assert ("lossy" if p["lossy"] else "loss-free") in text
    ax = step.figure.axes[0]
    # Markers of the probes so far at full opacity, the later ones faded.
    opaque = [c for c in ax.collections if c.get_alpha() is None]
    faded = [c for c in ax.collections if c.get_alpha() is not None]
    assert sum(len(c.get_offsets()) for c in opaque) == 2
    assert sum(len(c.get_offsets()) for c in faded) == n - 2
    values = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    np.testing.assert_allclose(np.sort(values), np.sort(view.probes["value"].to_numpy(dtype=float)))
    with pytest.raises(ValueError, match="step"):
        view.at(n + 1)


def test_stepper_without_probes_says_so():
    # FL at the floor and WL = 1: both brackets are empty under the corrected searches.
    view = interactive.pushdown_view(weights(), 1, 4, 20, "corrected")
    assert len(view.probes) == 0 and view.result == (1, 4)
    assert "0 probes" in view.sentence()
    view.figure  # draws the note, no error


# ----------------------------------------------------------------------------- PushUp view
def test_pushup_view_is_push_up_over_the_gd_grid():
    view = interactive.pushup_view(8, 4, gd=3.0, results_buffer=8, points=50)
    for gd, row in view.curve.iterrows():
        for s in heuristic.STRATEGIES:
            assert (row[(s, "WL")], row[(s, "FL")]) == heuristic.push_up(8, 4, gd, s, 8)
    assert view.table.loc["mean", "(WL, FL)"] == heuristic.push_up(8, 4, 3.0, "mean", 8)
    assert view.figure is not None
    with pytest.raises(ValueError, match="gd must be"):
        interactive.pushup_view(gd=-1.0)


# ----------------------------------------------------------------------------- widgets
def test_widget_path_builds_sliders_with_the_format_ranges():
    pytest.importorskip("ipywidgets")
    w = weights()
    ui = interactive.quantization_explorer(w, 8, 4, resolution=100, interactive=True)
    assert isinstance(ui, interactive.WidgetView)
    wl, fl, res = ui.controls["word_length"], ui.controls["fractional_length"], ui.controls["resolution"]
    assert (wl.min, wl.max, wl.value) == (1, 32, 8)     # FixedPoint: 1 <= WL <= 32
    assert (fl.min, fl.max, fl.value) == (0, 32, 4)     # 0 <= FL <= 32 (FL may exceed WL, as in QPyTorch)
    assert (res.min, res.value) == (2, 100) and res.max >= 100
    assert list(ui.controls["rounding"].options) == ["nearest", "stochastic"]
    assert WIDGET_MIME in ui._repr_mimebundle_()
    # A slider move redraws: the view is the static view of the new arguments.
    wl.value, fl.value = 6, 5
    expected = interactive.quantization_view(w, 6, 5, resolution=100)
    assert (ui.view.word_length, ui.view.fractional_length) == (6, 5)
    np.testing.assert_array_equal(ui.view.quantized_counts, expected.quantized_counts)
    assert ui.view.stats == expected.stats


def test_widget_stepper_slides_over_the_probes():
    pytest.importorskip("ipywidgets")
    w = weights(scale=0.05)
    ui = interactive.pushdown_stepper(w, 16, 12, 50, "reference", interactive=True)
    n = len(interactive.pushdown_view(w, 16, 12, 50, "reference").probes)
    step = ui.controls["step"]
    assert (step.min, step.max, step.value) == (1, n, 1)
    step.value = n
    assert ui.view.step == n
    up = interactive.pushup_explorer(8, 4, gd=3.0, interactive=True)
    assert up.controls["gd"].value == pytest.approx(3.0)
    up.controls["gd"].value = 10.0
    assert up.view.gd == pytest.approx(10.0)


def test_missing_ipywidgets_is_a_clear_error_when_widgets_are_asked_for(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    with pytest.raises(ImportError, match=r'pip install "adapt\[notebooks\]"'):
        interactive.quantization_explorer(weights(), interactive=True)
    monkeypatch.setenv(interactive.ENV_VAR, "1")
    with pytest.raises(ImportError, match="ipywidgets"):
        interactive.pushup_explorer()
    # Chosen by the front-end rule, not asked for: the static view, with a line saying what to install.
    monkeypatch.delenv(interactive.ENV_VAR)
    monkeypatch.setattr(interactive, "front_end_attached", lambda: True)
    view = interactive.quantization_explorer(weights())
    assert isinstance(view, interactive.QuantizationView)
    assert "adapt[notebooks]" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the rendering rule
def test_rule_order_argument_then_environment_then_front_end(monkeypatch):
    monkeypatch.setattr(interactive, "front_end_attached", lambda: True)
    assert interactive.use_widgets() is True
    assert interactive.use_widgets(False) is False
    for value, expected in (("0", False), ("off", False), ("1", True), ("auto", True), ("", True)):
        monkeypatch.setenv(interactive.ENV_VAR, value)
        assert interactive.use_widgets() is expected, value
    monkeypatch.setenv(interactive.ENV_VAR, "0")
    assert interactive.use_widgets(True) is True
    monkeypatch.setenv(interactive.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="ADAPT_INTERACTIVE must be 1, 0 or auto"):
        interactive.use_widgets()


def test_outside_a_kernel_is_static():
    assert interactive.front_end_attached() is False
    assert interactive.use_widgets() is False


def test_a_kernel_reports_a_front_end_only_for_requests_that_allow_stdin():
    """A real ipykernel: allow_stdin=True (what JupyterLab sends) -> widgets; False (nbclient, nbval) -> static."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = "import adapt.analysis.interactive as I; print('widgets', I.use_widgets())"

        def run(allow_stdin):
            out = []
            reply = kc.execute_interactive(code, allow_stdin=allow_stdin, timeout=120,
                                           output_hook=lambda m: out.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok", reply["content"]
            return "".join(out).strip()

        assert run(True) == "widgets True"
        assert run(False) == "widgets False"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_papermill_renders_the_static_figure_and_stores_no_widgets(tmp_path, monkeypatch):
    """The CI setting: papermill (tools/notebooks.py run) with no variable set; nbval sends allow_stdin=False too."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.delenv(interactive.ENV_VAR, raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nfrom adapt.analysis import interactive\n"
                                  "w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3"),
        nbformat.v4.new_code_cell("interactive.quantization_explorer(w, 8, 4, resolution=30)"),
        nbformat.v4.new_code_cell("interactive.pushdown_stepper(w, 16, 12, 30)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(dst), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    done = nbformat.read(dst, as_version=4)
    for cell in done.cells[1:]:
        kinds = [k for out in cell.outputs for k in out.get("data", {})]
        assert WIDGET_MIME not in kinds and "image/png" in kinds and "text/html" in kinds, kinds
    assert not done.metadata.get("widgets")


@pytest.mark.slow
def test_trained_weight_returns_the_checkpoint_tensor():
    w, record = interactive.trained_weight(epochs=1, subset=200)
    assert tuple(w.shape) == (120, 16, 5, 5) and w.dtype == torch.float32
    assert record["status"] == "completed" and record["config"]["subset"] == 200


def test_the_views_figure_titles_say_what_is_plotted():
    w = weights()
    q = interactive.quantization_view(w, 8, 4, resolution=20)
    left, right = q.figure.axes[:2]
    assert left.get_title().startswith("Histogram of w and of Q(w) at FixedPoint(8, 4)")
    assert right.get_title().startswith("The quantizer Q(x)")
    d = interactive.pushdown_view(w, 12, 8, 20, "corrected")
    assert d.figure.axes[0].get_title() == "Information-loss test value of each probe (corrected)"
    u = interactive.pushup_view(8, 4, 3.0)
    assert [a.get_title() for a in u.figure.axes[:2]] == ["FL after PushUp from (8, 4), RB = 8",
                                                          "WL after PushUp (solid line: GD = 3)"]
