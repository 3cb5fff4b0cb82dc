"""The training-level ablation: every reference-vs-corrected difference of the heuristic, alone.

Each key of :data:`adapt.heuristic.VARIANT_OPTIONS` is a difference between the released
heuristic (``variant="reference"``) and the fixed one (``variant="corrected"``).  The
ablation trains one base config (:data:`BASE_CONFIG`) as

* ``reference``: every option as released;
* one row per option ``X``: the reference variant with ``X`` alone set to its corrected
  value (``policy={..., X: VARIANT_OPTIONS["corrected"][X]}``), every other option at its
  reference value;
* ``corrected``: every option fixed,

each over :data:`SEEDS`, with one learning rate for every row (the base config's, unless
``overrides`` set another).  The rows follow ``VARIANT_OPTIONS``, so an option added there
is ablated without a change here.  Notebook 30 runs it and shows the table
(:func:`adapt.analysis.tables.ablation.ablation_table`) and the figure
(:func:`adapt.analysis.plots.ablation.ablation_figure`).

Where the records live.  A row is a :class:`adapt.experiments.grid.GridPoint` of the base config with
the row's variant and (for a one-option row) a ``policy`` override, so it is a custom run
with a run id of its own (``...-x<hash>``, :func:`adapt.experiments.grid.overrides_tag`).  The points are
trained into the results root ``<results>/ablation/`` (:data:`SUBDIR`; the default
``results`` is :func:`adapt.paths.results_root`), i.e.
``results/ablation/<profile>/<run_id>/record.json``, apart from the profile grids, whose
tables therefore never see them.  :func:`run_ablation` trains the points that have no finished
record (the runner skips those, :func:`adapt.experiments.runner.run_point`); :func:`load_ablation` reads
them back, keeping only records whose config is the point's current config.  The figure
goes beside them (:func:`figures_dir`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from adapt import paths
from adapt.experiments.configs import CONFIGS
from adapt.experiments.grid import POINT_FIELDS, GridPoint
from adapt.experiments.runner import run_grid
from adapt.heuristic import VARIANT_OPTIONS, VARIANTS
from adapt.records import run_state

__all__ = ["BASE_CONFIG", "SEEDS", "SUBDIR", "AblationRow", "options", "ablation_rows", "effective_options",
           "row_of", "ablation_points", "ablation_root", "figures_dir", "run_ablation", "load_ablation"]

#: The config every row trains: AlexNet on the offline digits set, 8 epochs (about 20 s on 2 CPU cores).
BASE_CONFIG = "smoke/adapt/alexnet_cifar/digits"

#: Seeds of every row (the smallest number that gives a standard deviation with some meaning).
SEEDS = (0, 1, 2)

#: Sub-folder of the results root that holds the ablation's records.
SUBDIR = "ablation"


@dataclass(frozen=True)
class AblationRow:
    """One row: ``label`` (``"reference"``, an option name, ``"corrected"``), the heuristic
    ``variant`` it trains with, and ``flipped``: the options it sets explicitly (one option at
    its corrected value, or nothing for the two endpoints)."""

    label: str
    variant: str
    flipped: dict = field(default_factory=dict)

    @property
    def option(self) -> Optional[str]:
        """The option this row flips (``None`` for the endpoints)."""
        return next(iter(self.flipped), None)


def options() -> tuple:
    """The ablated options: the keys of ``VARIANT_OPTIONS`` (in its order)."""
    ref, cor = VARIANT_OPTIONS["reference"], VARIANT_OPTIONS["corrected"]
    if set(ref) != set(cor):
        raise ValueError(f"VARIANT_OPTIONS: reference and corrected name different options "
                         f"({sorted(set(ref) ^ set(cor))})")
    return tuple(ref)


def ablation_rows() -> list:
    """``reference``, one row per option of :func:`options` (that option corrected), ``corrected``."""
    cor = VARIANT_OPTIONS["corrected"]
    return ([AblationRow("reference", "reference")]
            + [AblationRow(key, "reference", {key: cor[key]}) for key in options()]
            + [AblationRow("corrected", "corrected")])


def effective_options(config) -> dict:
    """The value of every ablated option in a config (an :class:`~adapt.config.ExperimentConfig`
    or its dict): the policy's explicit value, else the config's variant's (what
    :class:`adapt.heuristic.AdaptPolicy` resolves)."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    variant = cfg.get("variant") or "reference"
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    policy = cfg.get("policy") or {}
    return {key: policy.get(key, VARIANT_OPTIONS[variant][key]) for key in options()}


def _same(a, b) -> bool:
    """Equal option values, where ``True == 1`` and ``False == 0.0`` do not count as equal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def row_of(config) -> str:
    """The row label of a config: ``"reference"`` / ``"corrected"`` when every option has that
    variant's value, the option's name when exactly that one option is corrected and all others
    are as released, else ``"other"``."""
    eff = effective_options(config)
    ref, cor = VARIANT_OPTIONS["reference"], VARIANT_OPTIONS["corrected"]
    if all(_same(eff[k], ref[k]) for k in eff):
        return "reference"
    if all(_same(eff[k], cor[k]) for k in eff):
        return "corrected"
    differ = [k for k in eff if not _same(eff[k], ref[k])]
    if len(differ) == 1 and _same(eff[differ[0]], cor[differ[0]]):
        return differ[0]
    return "other"


def ablation_points(config_name: str = BASE_CONFIG, seeds: Sequence[int] = SEEDS,
                    overrides: Optional[dict] = None, rows: Optional[Sequence[str]] = None) -> list:
    """``[(row, GridPoint), ...]``: every row of :func:`ablation_rows` x ``seeds``, row by row.

    ``rows`` (labels: ``"reference"``, option names, ``"corrected"``) keeps only those rows.
    ``overrides`` (config fields, e.g. ``{"epochs": 15, "lr": 0.002}``) apply to every row
    alike.  The base config's policy must leave the ablated options to the variant
    (otherwise the corrected endpoint would not be corrected); a ``policy`` override is
    merged into the base config's policy.
    """

    if config_name not in CONFIGS:
        raise ValueError(f"unknown config {config_name!r}; the ablation needs an 'adapt' config, "
                         f"e.g. {BASE_CONFIG!r}")
    base = CONFIGS[config_name]
    if base.method != "adapt":
        raise ValueError(f"config {config_name!r} has method {base.method!r}; the ablation needs an 'adapt' config")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of integers >= 0, got {seeds!r}")
    overrides = dict(overrides or {})
    for key in POINT_FIELDS:
        if key in overrides:
            raise ValueError(f"override {key!r}: the ablation sets {key} per row and seed; "
                             f"pass seeds=... for the seeds")
    policy = {**base.policy, **dict(overrides.pop("policy", None) or {})}
    pinned = sorted(set(policy) & set(options()))
    if pinned:
        raise ValueError(f"the policy of {config_name!r} (with the overrides) sets {pinned}; the ablation "
                         f"sets those options per row, so leave them to the variant")
    known = [r.label for r in ablation_rows()]
    unknown = sorted(set(rows or ()) - set(known))
    if unknown:
        raise ValueError(f"rows {unknown} are not ablation rows; valid: {known}")
    points = []
    for row in ablation_rows():
        if rows is not None and row.label not in rows:
            continue
        extra = dict(overrides)
        if row.flipped or policy != base.policy:
            extra["policy"] = {**policy, **row.flipped}
        for seed in seeds:
            points.append((row, GridPoint(config_name, row.variant, seed, 0, extra)))
    return points


def ablation_root(results_root=None) -> Path:
    """``<results root>/ablation``: the results root the ablation's points are trained into."""

    return paths.results_root(results_root) / SUBDIR


def figures_dir(results_root=None, figures_dir=None) -> Path:
    """Where notebook 30 saves the ablation's figure: ``figures_dir`` if given, else
    ``$ADAPT_FIGURES`` if set (a test run's scratch folder), else ``<results root>/ablation/figures``.

    Beside the records it is drawn from, as ``results/mnist5k/figures/`` holds the mnist5k
    figures, so that the repository's ``figures/`` keeps only the figures the README lists.
    """

    if figures_dir is not None and str(figures_dir) != "":
        return paths.figures_root(figures_dir)
    env = paths.env_path(paths.FIGURES_ENV)
    return env if env is not None else ablation_root(results_root) / "figures"


def run_ablation(points, results_root=None, force: bool = False, verbose: bool = True):
    """Train the points (``ablation_points()``'s pairs or bare GridPoints) that have no finished record.

    In this process (the runner's ``inline`` executor), into :func:`ablation_root`; returns the
    runner's status frame (:func:`adapt.experiments.runner.run_grid`).  ``force`` retrains finished points.
    """

    pts = [p[1] if isinstance(p, tuple) else p for p in points]
    return run_grid(points=pts, results_root=ablation_root(results_root), executor="inline", force=force,
                    verbose=verbose, progress=False)


def load_ablation(points, results_root=None) -> tuple:
    """``(records, status)``: the records of ``points`` and one status row per point.

    ``status`` (a DataFrame): ``row, seed, run_id, status`` -- the record's status,
    ``missing`` (no record) or ``stale`` (its config is not the point's current config; left
    out of ``records``) -- and ``path`` (relative to the results root).
    """
    root = ablation_root(results_root)
    records, rows = [], []
    for item in points:
        row, point = item if isinstance(item, tuple) else (None, item)
        path = point.out_dir(root) / "record.json"
        state = run_state(path.parent, point.config().to_dict())
        if state.kind in ("new", "corrupt"):
            status = "missing" if state.kind == "new" else "corrupt"
        elif state.kind == "stale":
            status = "stale"
        else:
            status = state.status
            records.append(state.record)
        rows.append({"row": row.label if row is not None else row_of(point.config()), "seed": point.seed,
                     "run_id": point.run_id, "status": status,
                     "path": path.relative_to(root.parent).as_posix()})
    return records, pd.DataFrame(rows, columns=["row", "seed", "run_id", "status", "path"])
