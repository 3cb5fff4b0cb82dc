"""What every figure of :mod:`adapt.analysis.plots` shares: style, colours and names, the figure class, saving.

The figures are made without pyplot (:class:`PlotFigure`, a
``matplotlib.figure.Figure``), each inside :func:`styled` (a seaborn ``whitegrid``
style applied inside the function only).  :func:`save_figure` writes the PNG and PDF
files into :func:`adapt.paths.figures_root` unless told otherwise
(``$ADAPT_FIGURES``, else ``<repo>/figures``), whatever the working directory, and its
files are byte-for-byte the same for the same figure (no dates or software tags in
the PNG and PDF metadata).

Methods and arms.  Each method has its colour (:data:`METHOD_COLORS`), the two float32
baselines included: ``float32`` is AdaPT's baseline, ``float32-muppet`` MuPPET's (a
run's method is the method segment of its config name, :func:`run_method`).  AdaPT's
corrected heuristic is an arm of its own (:func:`arm_color`, :func:`arm_name`), so the
reference and corrected runs are never averaged into one bar or one colour.

Nothing to draw: :func:`placeholder_figure` -- a figure that says why it is empty (a
profile with no completed run).

The shared helpers here (``styled``, ``new_figure``, ``config_of``, ``as_records``,
``as_float``, ``sequential_color`` and the display names) are used by the other submodules.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from typing import Mapping, Optional, Sequence

from matplotlib.figure import Figure

from adapt.analysis.tables import run_method as _run_method
from adapt.paths import figures_root
from adapt.records import ReadOnlyError, check_writable

__all__ = [
    "PlotFigure", "STYLE", "METHOD_COLORS", "ARM_COLORS", "method_name", "method_color", "run_method",
    "arm_name", "arm_color", "run_title", "save_figure", "placeholder_figure",
]


#: seaborn axes style applied inside every figure function.
STYLE = "whitegrid"

#: One colour per method (seaborn's colour-blind palette), used by every multi-run figure.
METHOD_COLORS = {
    "float32": "#0173b2",
    "float32-muppet": "#56b4e9",
    "muppet": "#de8f05",
    "adapt": "#029e73",
    "fixed": "#cc78bc",
}

#: Colours of the arms that are not a method's default variant.
ARM_COLORS = {("adapt", "corrected"): "#ca9161"}
_FALLBACK_COLORS = ("#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9", "#d55e00")


_METHOD_NAMES = {"float32": "float32", "float32-muppet": "float32 (MuPPET's)", "muppet": "MuPPET", "adapt": "AdaPT",
                 "fixed": "fixed"}
_ARM_NAMES = {"float32": "float32 (AdaPT's baseline)", "float32-muppet": "float32 (MuPPET's baseline)"}
MODEL_NAMES = {"alexnet_cifar": "AlexNet", "resnet20": "ResNet-20", "lenet5": "LeNet-5",
                "alexnet_mnist": "AlexNet (1-channel)", "resnet20_mnist": "ResNet-20 (1-channel)"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "emnist": "EMNIST", "mnist": "MNIST",
                  "fmnist": "Fashion-MNIST", "digits": "digits", "synthetic": "synthetic"}


# ======================================================================= helpers
@contextlib.contextmanager
def styled():
    import seaborn as sns

    with sns.axes_style(STYLE), sns.plotting_context("notebook", font_scale=0.9):
        yield


class PlotFigure(Figure):
    """The figures of this module: a plain :class:`~matplotlib.figure.Figure` that Jupyter
    shows as PNG even when no pyplot backend has been activated yet."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(nrows=1, ncols=1, figsize=None, **kwargs):
    """A constrained-layout figure that pyplot does not track, and its axes (a 2-D array)."""
    fig = PlotFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def method_name(method: Optional[str]) -> str:
    return _METHOD_NAMES.get(method, str(method))


def method_color(method: Optional[str]) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK_COLORS[sum(map(ord, str(method))) % len(_FALLBACK_COLORS)]


def run_method(record: Mapping) -> Optional[str]:
    """The method segment of the record's config name (``float32-muppet`` stays apart from ``float32``)."""
    return _run_method(record)


def arm_name(method: Optional[str], variant: Optional[str] = None) -> str:
    """Legend label of a method and AdaPT variant: ``"float32 (AdaPT's baseline)"``, ``"float32 (MuPPET's
    baseline)"``, ``"MuPPET"``, ``"AdaPT (reference)"``, ``"AdaPT (corrected)"`` (the variant is shown for
    AdaPT only: it is AdaPT's heuristic variant)."""
    if method == "adapt" and variant:
        return f"AdaPT ({variant})"
    return _ARM_NAMES.get(method, method_name(method))


def arm_color(method: Optional[str], variant: Optional[str] = None) -> str:
    """The colour of a method, or of AdaPT's corrected variant (:data:`ARM_COLORS`)."""
    return ARM_COLORS.get((method, variant), method_color(method))


def config_of(record: Mapping) -> dict:
    return record.get("config") or {}


def run_title(record: Mapping, method: bool = True, seed: bool = True) -> str:
    """``"AdaPT (reference heuristic), AlexNet, CIFAR-10, seed 0"``-style title of a record.

    The method is named with AdaPT's heuristic variant (``reference`` or ``corrected``), so the
    figures of two runs that differ only in the variant never share a title; ``seed``: add the
    run's seed when the record has one.  ``method=False`` leaves the method out.
    """
    cfg = config_of(record)
    parts = []
    if method and cfg.get("method"):
        if cfg["method"] == "adapt" and cfg.get("variant"):
            parts.append(f"AdaPT ({cfg['variant']} heuristic)")
        else:
            parts.append(method_name(cfg["method"]))
    if cfg.get("model"):
        parts.append(MODEL_NAMES.get(cfg["model"], cfg["model"]))
    if cfg.get("dataset"):
        parts.append(DATASET_NAMES.get(cfg["dataset"], cfg["dataset"]))
    if seed and cfg.get("seed") is not None:
        parts.append(f"seed {cfg['seed']}")
    return ", ".join(parts) or str(record.get("name", "run"))


def as_records(records) -> list:
    if isinstance(records, Mapping):
        return [records]
    return list(records)


def as_float(v) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):  # adapt.records writes NaN/inf as strings
        try:
            return float(v)
        except ValueError:
            return math.nan
    return float(v)


def sequential_color(k: int, n: int, cmap: str = "viridis"):
    import matplotlib

    return matplotlib.colormaps[cmap](0.1 + 0.8 * (k / max(n - 1, 1)))


# ======================================================================= saving
def save_figure(fig, name: str, directory=None, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list:
    """Write ``fig`` as ``<directory>/<name>.png`` (``dpi``) and ``.pdf``; return the paths.

    ``directory``: ``None`` is :func:`adapt.paths.figures_root` (``$ADAPT_FIGURES``, else
    ``<repo>/figures``); a relative path is taken relative to the repository, an
    absolute one as is (:func:`adapt.paths.resolve`).  Each file is written to a
    temporary file in the same directory and then renamed over the target, so a reader
    never sees half a figure.  Creation dates and the software tag are left out of the
    metadata (PDF ``CreationDate``/``Producer``/``Creator``, PNG ``Software``, SVG
    ``Date``), so the same figure gives byte-identical files and re-running a notebook on
    the same records leaves them unchanged.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    directory = figures_root(directory)
    try:  # a read-only figures folder: the figure is shown, its file is not written (one line says so)
        check_writable(directory, f"save {name} there (set $ADAPT_FIGURES to a folder you can write)")
    except ReadOnlyError as exc:
        print(f"figure not saved: {exc}")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    paths = []
    for ext in formats:
        ext = ext.lstrip(".").lower()
        path = directory / f"{name}.{ext}"
        metadata = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None},
                    "png": {"Software": None}, "svg": {"Date": None, "Creator": None}}.get(ext)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=ext, dpi=dpi, bbox_inches="tight", metadata=metadata)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the figure private
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        paths.append(path)
    return paths


# ======================================================================= nothing to draw
def placeholder_figure(message: str, title: Optional[str] = None, figsize=(6.0, 2.4)):
    """A figure that only says ``message`` (e.g. "no completed runs in the quick profile"), for a
    notebook that must save *something* under a figure's name rather than leave an old file there."""
    import textwrap

    fig, axes = new_figure(figsize=figsize)
    ax = axes[0, 0]
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(str(message), 60)), ha="center", va="center", fontsize=10,
            color="0.3", transform=ax.transAxes)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig
