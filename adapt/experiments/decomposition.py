"""The decomposition of "AdaPT vs float32" on mnist5k: which part costs accuracy, which part drives the bits.

AdaPT differs from its float32 baseline in three ways at once: another optimizer (every gradient
normalized to unit norm, another learning rate and schedule, an L1 term: the ``mnist5k/adapt`` config),
fixed-point quantization, and the heuristic that picks the formats.  Each arm below adds one of them,
on the AdaPT config of ``mnist5k`` (LeNet-5, the released LeNet-5 and layers with ``variant="reference"``),
over :data:`SEEDS`:

``float32``
    the grid's float32 baseline (plain SGD, its own lr, schedule and 10 epochs); its records are the
    ``mnist5k`` grid's, not trained here.
``float32-adapt-optimizer``
    AdaPT's config (lr, schedule, 15 epochs, L1, weight decay) without quantization: method ``float32``
    with ``normalize_gradients=True`` (:class:`adapt.policies.Float32Policy`).
``fixed-8/4``, ``fixed-16/8``
    AdaPT's optimizer and quantization points with every tensor held at one format: the AdaPT policy
    with ``switching=False`` and that initial format.
``held-final``
    every tensor held from the first step at the format the reference AdaPT run of the same seed ended
    with (its record's ``policy.final_formats``): the heuristic's destination without its path.
``adapt``
    the grid's reference AdaPT run (not trained here).
``adapt-logits``, ``adapt-no-in-place``
    the reference AdaPT with one released quirk turned off: the LeNet-5's double softmax
    (``softmax_output``) or the layers' in-place input quantization (``in_place_inputs``).
``max_lookback=<n>``, ``min_lookback=<n>``
    the reference AdaPT run with the lookback bounds changed: what drives the word length
    (docs/method.md §1.4.4 and §1.4.8; notebook 40 derives the fixed point the rules settle at).

The arms are custom runs of the ``mnist5k`` configs (a run id with a hash of the overrides,
:func:`adapt.experiments.grid.overrides_tag`) trained into ``<results>/decomposition/`` (:data:`SUBDIR`),
apart from the grid, whose tables therefore never see them; :func:`decomposition_points` lists them,
:func:`run_decomposition` trains the ones without a finished record, :func:`load_decomposition` reads
them back.  Notebook 40 shows them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from adapt import paths
from adapt.experiments.configs import CONFIGS
from adapt.experiments.grid import GridPoint
from adapt.experiments.runner import run_grid
from adapt.records import RECORD, load_record, run_state

__all__ = ["ADAPT_CONFIG", "FLOAT32_CONFIG", "SEEDS", "SUBDIR", "MAX_LOOKBACKS", "MIN_LOOKBACKS", "Arm", "arms",
           "decomposition_points", "decomposition_root", "run_decomposition", "load_decomposition"]

#: The AdaPT config every arm starts from, and the float32 baseline the grid trains.
ADAPT_CONFIG = "mnist5k/adapt/lenet5/mnist5k"
FLOAT32_CONFIG = "mnist5k/float32/lenet5/mnist5k"

#: Seeds of every arm: the five of the mnist5k grid, so that every arm is compared over the same seeds.
SEEDS = (0, 1, 2, 3, 4)

#: The lookback bounds swept (each with the other bound at the config's value).
MAX_LOOKBACKS = (25, 50, 100, 150, 300)
MIN_LOOKBACKS = (5, 10, 25, 50, 100)

#: Sub-folder of the results root that holds the decomposition's records.
SUBDIR = "decomposition"


@dataclass(frozen=True)
class Arm:
    """One arm: its ``label``, the ``config`` it starts from, the ``overrides`` it applies (``policy``
    merged into the config's own), and ``from_grid`` when its records are the mnist5k grid's."""

    label: str
    config: str
    overrides: dict = field(default_factory=dict)
    from_grid: bool = False
    needs_final_formats: bool = False
    group: str = "decomposition"


def arms() -> list:
    """Every arm, in the order of the decomposition (one change at a time), then the lookback sweeps."""
    base = CONFIGS[ADAPT_CONFIG]
    out = [
        Arm("float32", FLOAT32_CONFIG, from_grid=True),
        Arm("float32-adapt-optimizer", ADAPT_CONFIG, {"method": "float32", "policy": {"normalize_gradients": True},
                                                      "in_place_inputs": False}),  # float32 quantizes no input
        Arm("fixed-8/4", ADAPT_CONFIG, {"policy": {"switching": False, "initial_word_length": 8,
                                                   "initial_fractional_length": 4}}),
        Arm("fixed-16/8", ADAPT_CONFIG, {"policy": {"switching": False, "initial_word_length": 16,
                                                    "initial_fractional_length": 8}}),
        Arm("held-final", ADAPT_CONFIG, {"policy": {"switching": False}}, needs_final_formats=True),
        Arm("adapt", ADAPT_CONFIG, from_grid=True),
    ]
    # The released model and layer quirks (docs/method.md §1.10), each turned off alone in the reference AdaPT.
    out.append(Arm("adapt-logits", ADAPT_CONFIG, {"softmax_output": False}, group="quirks"))
    out.append(Arm("adapt-no-in-place", ADAPT_CONFIG, {"in_place_inputs": False}, group="quirks"))
    for n in MAX_LOOKBACKS:
        if n != base.policy.get("max_lookback") and n >= base.policy.get("min_lookback", 1):
            out.append(Arm(f"max_lookback={n}", ADAPT_CONFIG, {"policy": {"max_lookback": n}}, group="max_lookback"))
    for n in MIN_LOOKBACKS:
        if n != base.policy.get("min_lookback") and n <= base.policy.get("max_lookback", n):
            out.append(Arm(f"min_lookback={n}", ADAPT_CONFIG, {"policy": {"min_lookback": n}}, group="min_lookback"))
    return out


def _final_formats(seed: int, grid_root: Path) -> dict:
    """The final formats of the reference AdaPT grid run of ``seed`` (``ValueError`` when it is missing)."""
    point = GridPoint(ADAPT_CONFIG, "reference", seed, 0)
    path = point.out_dir(grid_root) / RECORD
    if run_state(path.parent, point.config().to_dict()).kind != "finished":
        raise ValueError(f"arm held-final needs the finished reference AdaPT run of seed {seed} at "
                         f"{paths.display(path)}; train it first (adapt grid mnist5k --match '{point.run_id}')")
    return dict(load_record(path)["policy"]["final_formats"])


def decomposition_points(seeds: Sequence[int] = SEEDS, labels: Optional[Sequence[str]] = None,
                         grid_root=None, missing: str = "raise") -> list:
    """``[(arm, GridPoint), ...]`` for every arm (or those in ``labels``) and seed.

    Arms ``from_grid`` are the mnist5k grid's points (read from ``grid_root``, default the repository's
    results); ``held-final`` reads the final formats of the grid's reference AdaPT run of each seed there,
    and ``missing="skip"`` leaves out a seed whose run is not there (``"raise"``: ``ValueError``).
    """
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")
    known = [a.label for a in arms()]
    unknown = sorted(set(labels or ()) - set(known))
    if unknown:
        raise ValueError(f"arms {unknown} are not arms of the decomposition; valid: {known}")
    grid_root = paths.results_root(grid_root)
    out = []
    for arm in arms():
        if labels is not None and arm.label not in labels:
            continue
        base = CONFIGS[arm.config]
        for seed in seeds:
            overrides = {k: v for k, v in arm.overrides.items() if k != "policy"}
            policy = dict(arm.overrides.get("policy") or {})
            if arm.needs_final_formats:
                try:
                    policy["initial_formats"] = _final_formats(seed, grid_root)
                except ValueError:
                    if missing == "raise":
                        raise
                    continue
            if policy:
                if overrides.get("method", base.method) == base.method:
                    policy = {**base.policy, **policy}
                overrides["policy"] = policy
            out.append((arm, GridPoint(arm.config, "reference", seed, 0, overrides)))
    return out


def decomposition_root(results_root=None) -> Path:
    """``<results root>/decomposition``: where the arms that are not grid points are trained."""
    return paths.results_root(results_root) / SUBDIR


def run_decomposition(points, results_root=None, force: bool = False, verbose: bool = True):
    """Train the points that are not grid points and have no finished record, in this process."""
    pts = [p for arm, p in points if not arm.from_grid]
    return run_grid(points=pts, results_root=decomposition_root(results_root), executor="inline", force=force,
                    verbose=verbose)


def load_decomposition(points, results_root=None) -> tuple:
    """``(records, status)``: the finished records of ``points`` (arm label in ``record["arm"]``) and one
    status row per point (``arm, seed, run_id, status``: the record's status, ``missing``, ``stale``)."""
    records, rows = [], []
    for arm, point in points:
        root = paths.results_root(results_root) if arm.from_grid else decomposition_root(results_root)
        state = run_state(point.out_dir(root), point.config().to_dict())
        status = {"new": "missing", "corrupt": "corrupt", "stale": "stale"}.get(state.kind, state.status)
        if state.kind == "finished":
            records.append({**state.record, "arm": arm.label, "arm_group": arm.group})
        rows.append({"arm": arm.label, "seed": point.seed, "run_id": point.run_id, "status": status})
    return records, pd.DataFrame(rows, columns=["arm", "seed", "run_id", "status"])
