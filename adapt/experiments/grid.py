"""The experiment grid of each profile and the runner that fills ``results/<profile>/``.

A :class:`GridPoint` is one training run: a named config
(``"<profile>/<method>/<model>/<dataset>"``, :mod:`adapt.experiments.configs`), the AdaPT
heuristic variant, a seed and a fold.  :func:`grid` lists the points of a profile,
:func:`run_point` runs one, :func:`run_grid` runs them all and returns their
statuses; ``python -m adapt grid PROFILE`` is the command line (``make grid``).

The grids
---------
=======  =========================  ==========================================  ======
profile  data                       replicates                                  points
=======  =========================  ==========================================  ======
smoke    digits                     AlexNet seeds 0, 1; ResNet-20 seed 0        15
quick    CIFAR-10, CIFAR-100        seed 0                                      16
paper    CIFAR-10, CIFAR-100        k-fold methods (float32, adapt): seed 0,    104
                                    folds 0-9; hold-out methods (float32-muppet,
                                    muppet): seeds 0, 1, 2, fold 0
sdm      MNIST, Fashion-MNIST,      the official KCV: folds 0-9 where it is    58
         EMNIST (balanced)          10 (AdaPT LeNet-5/MNIST, ResNet-20/EMNIST),
                                    fold 0 where it is 1; hold-out: seeds 0-2
mnist5k  mnist5k (5,000 real        seeds 0-4, fold 0; float32 and adapt with  30
         MNIST images, offline)     both variants (FLOAT32_VARIANTS)
=======  =========================  ==========================================  ======

The CIFAR profiles run both CIFAR models (``alexnet_cifar``, ``resnet20``) on every data
set; ``sdm`` runs the SDM paper's pairs (:data:`PAIRS`: ``lenet5`` on the three
MNIST-family sets, ``alexnet_mnist`` and ``resnet20_mnist`` on EMNIST); ``mnist5k`` runs
``lenet5``.  Every profile runs the methods
:data:`GRID_METHODS`: AdaPT's float32 baseline (``float32``), MuPPET's float32
baseline (``float32-muppet``), ``muppet`` and ``adapt``.  ``adapt`` runs with the
heuristic variants of :data:`ADAPT_VARIANTS` (smoke and mnist5k: reference *and* corrected,
for the ablation; quick, paper and sdm: reference only, to keep the budget); every
other method runs once per replicate with variant ``reference`` (the variant only
changes the AdaPT heuristic).

Replicates (:data:`SEEDS`, :data:`FOLDS`; module constants so a profile's budget can
be tuned in one place).  The two protocols replicate differently, as their official
codes do (docs/method.md §1.6, §2.3):

* ``kfold`` (AdaPT and its float32 baseline): the official script trains one fresh
  model per fold of a 10-fold stratified split of the training set and reports the
  **maximum over folds** of the test accuracy.  ``paper`` runs all 10 folds of seed 0
  (seed 0 fixes the split, so the 10 folds partition the same training set); smoke
  and quick run fold 0 only.
* ``holdout`` (MuPPET and its float32 baseline): a fixed 80/20 split; replicates are
  seeds.  The official MuPPET code has no repetition protocol and the number of runs
  behind the paper's numbers is not retrieved (docs/method.md §4 item 16): ``paper`` uses
  3 seeds, the smallest number that gives a standard deviation with some meaning.

Running a point
---------------
:mod:`adapt.experiments.runner` runs points (:func:`~adapt.experiments.runner.train_point`,
:func:`~adapt.experiments.runner.run_point`, :func:`~adapt.experiments.runner.run_grid`) and reads their state
(:func:`~adapt.experiments.runner.status_frame`); those names are importable from here too.  This module
defines the grid: the profile tables, :class:`GridPoint`, the selection (:func:`select`,
:func:`shard`) and which records belong to a profile (:func:`is_grid_record`), and the
command line ``python -m adapt grid``.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from adapt import paths
from adapt.config import ExperimentConfig
from adapt.experiments.configs import CONFIGS, PROFILES, SDM_KCV, get_config
from adapt.records import FAILED, SCHEMA, jsonable, utc_now

__all__ = [
    "MODELS", "PAIRS", "PROFILE_MODELS", "GRID_METHODS", "DATASETS", "ADAPT_VARIANTS", "FLOAT32_VARIANTS", "SEEDS", "FOLDS", "EXECUTORS",
    "GridPoint", "grid", "failure_record", "select", "shard", "overrides_tag", "record_point",
    "is_grid_record", "split_records", "POINT_FIELDS", "check_points",
]

#: The models of the CIFAR profiles (smoke, quick, paper).
MODELS = ("alexnet_cifar", "resnet20")

#: The methods of every profile (the method segment of the config names).
GRID_METHODS = ("float32", "float32-muppet", "muppet", "adapt")

#: Data sets per profile.
DATASETS = {"smoke": ("digits",), "quick": ("cifar10", "cifar100"), "paper": ("cifar10", "cifar100"),
            "sdm": ("mnist", "fashion_mnist", "emnist"), "mnist5k": ("mnist5k",)}

#: (model, data set) pairs per profile, in run order: every model on every data set of the CIFAR
#: profiles; the SDM paper's five pairs (LeNet-5 on the three MNIST-family sets, the MNIST
#: AlexNet and ResNet-20 on EMNIST); LeNet-5 on mnist5k.
PAIRS = {
    **{p: tuple((m, d) for m in MODELS for d in DATASETS[p]) for p in ("smoke", "quick", "paper")},
    "sdm": (("lenet5", "mnist"), ("lenet5", "fashion_mnist"), ("lenet5", "emnist"),
            ("alexnet_mnist", "emnist"), ("resnet20_mnist", "emnist")),
    "mnist5k": (("lenet5", "mnist5k"),),
}

#: The models of each profile (from :data:`PAIRS`).
PROFILE_MODELS = {p: tuple(dict.fromkeys(m for m, _ in pairs)) for p, pairs in PAIRS.items()}

#: AdaPT heuristic variants per profile (every other method runs with ``reference`` only, but see
#: :data:`FLOAT32_VARIANTS`).
ADAPT_VARIANTS = {"smoke": ("reference", "corrected"), "quick": ("reference",), "paper": ("reference",),
                  "sdm": ("reference",), "mnist5k": ("reference", "corrected")}

#: Variants of AdaPT's float32 baseline per profile: ``corrected`` too where the variant changes the
#: float32 model itself (the released LeNet-5 returns softmax(logits), the corrected one logits), so that
#: the corrected AdaPT has a float32 baseline of its own model.
FLOAT32_VARIANTS = {"mnist5k": ("reference", "corrected")}

#: Seeds per profile, protocol ("kfold": AdaPT's, "holdout": MuPPET's) and model.
SEEDS = {
    "smoke": {"kfold": {"alexnet_cifar": (0, 1), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0, 1), "resnet20": (0,)}},
    "quick": {"kfold": {"alexnet_cifar": (0,), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0,), "resnet20": (0,)}},
    "paper": {"kfold": {"alexnet_cifar": (0,), "resnet20": (0,)},
              "holdout": {"alexnet_cifar": (0, 1, 2), "resnet20": (0, 1, 2)}},
    "sdm": {"kfold": {"lenet5": (0,), "alexnet_mnist": (0,), "resnet20_mnist": (0,)},
            "holdout": {"lenet5": (0, 1, 2), "alexnet_mnist": (0, 1, 2), "resnet20_mnist": (0, 1, 2)}},
    # mnist5k: five seeds of every method, the replication verdict's replicates (notebook 40)
    "mnist5k": {"kfold": {"lenet5": (0, 1, 2, 3, 4)}, "holdout": {"lenet5": (0, 1, 2, 3, 4)}},
}

#: Folds per profile for the k-fold-protocol methods (hold-out methods always run fold 0): a tuple,
#: or (sdm) a dict ``(method, model, dataset) -> folds``: the released KCV (``SDM_KCV``: 10 folds
#: where the official config has KCV = 10, fold 0 where its KCV = 1 cannot run, see adapt.experiments.configs).
FOLDS = {"smoke": (0,), "quick": (0,), "paper": tuple(range(10)),
         "sdm": {(method, m, d): tuple(range(10)) if kcv == 10 else (0,) for (m, d, method), kcv in SDM_KCV.items()},
         "mnist5k": (0,)}

EXECUTORS = ("papermill", "inline")

DEFAULT_NOTEBOOK = "notebooks/10-train.ipynb"


#: Fields of a config that a :class:`GridPoint` sets itself (never an override).
POINT_FIELDS = ("variant", "seed", "fold")


def overrides_tag(overrides) -> str:
    """``""`` for no overrides, else ``"x"`` + 8 hex digits of a hash of the overrides.

    The hash is SHA-256 of the overrides as canonical JSON (sorted keys, the values as
    they read back from a record), so it is the same on every machine and Python version.
    """
    items = dict(overrides)
    if not items:
        return ""
    text = json.dumps(jsonable(items), sort_keys=True, separators=(",", ":"))
    return "x" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _normalize_overrides(config_name: str, overrides, variant: str = "reference") -> tuple:
    """Sorted ``(field, value)`` pairs, without those equal to the registry's value (under ``variant``,
    which sets the released quirks, adapt.experiments.configs.released_quirks)."""
    pairs = overrides.items() if isinstance(overrides, dict) else (tuple(p) for p in overrides)
    base = get_config(config_name, variant=variant).to_dict()
    out = []
    for key, value in pairs:
        if key in POINT_FIELDS:
            raise ValueError(f"override {key!r}={value!r}: {key} is a grid point field, not an override; "
                             f"pass {key}={value!r} to GridPoint / train_point (adapt run --{key})")
        if key == "name" or key == "profile":
            raise ValueError(f"override {key!r}={value!r}: the config's {key} comes from its registry entry "
                             f"{config_name!r} and cannot be overridden")
        if key in base and jsonable(value) == base[key]:
            continue  # the registry's own value: the point stays the grid's
        out.append((key, _freeze(value)))
    return tuple(sorted(out))


def _freeze(value):
    """Lists and dicts as tuples, so a GridPoint stays hashable (thawed again by :meth:`GridPoint.config`)."""
    if isinstance(value, dict):
        return ("__dict__",) + tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, tuple) and value[:1] == ("__dict__",):
        return {k: _thaw(v) for k, v in value[1:]}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class GridPoint:
    """One run: a named config, the heuristic variant, a seed, a fold, and optional overrides.

    ``overrides`` holds other config fields (a dict, or ``(field, value)`` pairs), e.g.
    ``{"epochs": 15, "lr": 0.001}``.  Overrides equal to the registry's value are dropped.
    A point with overrides is a *custom run*: its :attr:`run_id` carries a short stable
    hash of them (:func:`overrides_tag`), so it gets a folder of its own and never
    replaces the grid point's record, and :func:`is_grid_record` keeps it out of a
    profile's tables.
    """

    config_name: str
    variant: str = "reference"
    seed: int = 0
    fold: int = 0
    overrides: tuple = ()

    def __post_init__(self):
        if self.config_name not in CONFIGS:
            close = difflib.get_close_matches(str(self.config_name), CONFIGS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `python -m adapt grid PROFILE --list` lists them"
            raise ValueError(f"unknown config {self.config_name!r}{hint}")
        object.__setattr__(self, "overrides", _normalize_overrides(self.config_name, self.overrides or (), self.variant))

    @property
    def profile(self) -> str:
        return self.config_name.split("/")[0]

    @property
    def method(self) -> str:
        """The method segment of the config name (``float32-muppet`` stays distinct from ``float32``)."""
        return self.config_name.split("/")[1]

    @property
    def model(self) -> str:
        return self.config_name.split("/")[2]

    @property
    def dataset(self) -> str:
        return self.config_name.split("/")[3]

    @property
    def override_dict(self) -> dict:
        """The overrides as a plain dict (JSON values)."""
        return {k: _thaw(v) for k, v in self.overrides}

    @property
    def is_custom(self) -> bool:
        """True when the point has overrides (its config is not the registry's)."""
        return bool(self.overrides)

    @property
    def run_id(self) -> str:
        """A stable folder name: ``adapt-resnet20-digits-reference-s0-f0``, plus ``-x<hash>`` with overrides."""
        base = f"{self.method}-{self.model}-{self.dataset}-{self.variant}-s{self.seed}-f{self.fold}"
        tag = overrides_tag(self.override_dict)
        return f"{base}-{tag}" if tag else base

    def config(self) -> ExperimentConfig:
        """The named config with this point's variant, seed, fold and overrides."""
        return get_config(self.config_name, variant=self.variant, seed=self.seed, fold=self.fold,
                          **self.override_dict)

    def out_dir(self, results_root=None) -> Path:
        """``<results_root>/<profile>/<run_id>/`` (the root resolved by :func:`adapt.paths.results_root`)."""
        return paths.results_root(results_root) / self.profile / self.run_id

    def params(self, results_root=None, force: bool = False) -> dict:
        """The notebook parameters of this point."""
        p = {"config_name": self.config_name, "variant": self.variant, "seed": self.seed, "fold": self.fold,
             "results_root": str(results_root) if results_root is not None else None, "force": bool(force)}
        if self.overrides:
            p["overrides"] = self.override_dict
        return p


def check_points(points: Sequence[GridPoint]) -> list:
    """``points`` as a list, once every point's config is built and checked (its fields, the method's options).

    ``adapt run``, ``adapt grid`` (also with ``--set``) and :func:`adapt.experiments.runner.run_grid`
    call this before anything is written, so that a bad value is one error naming it, the same in
    every command, and never a run folder and a failure record per point.  ``ValueError`` names the
    config, the run id and the field, its value and what is allowed.
    """
    points = list(points)
    for p in points:
        try:
            p.config()
        except ValueError as exc:
            raise ValueError(f"{p.config_name} ({p.run_id}): {exc}") from None
    return points


def record_point(record: dict) -> Optional[GridPoint]:
    """The point a run record belongs to, its overrides read off the record's config.

    Works for records written before run ids carried overrides: the overrides are the
    config fields that differ from the registry entry of the record's name.  ``None``
    when the record's config name is not in the registry (a hand-made config) or the
    record has no seed/fold (a failure record of a config that could not be built).
    """
    cfg = record.get("config") if isinstance(record, dict) else None
    if not isinstance(cfg, dict) or cfg.get("name") not in CONFIGS:
        return None
    if not all(isinstance(cfg.get(k), int) for k in ("seed", "fold")) or cfg.get("variant") is None:
        return None
    try:  # the registry entry under the record's variant (which sets the released quirks)
        base = get_config(cfg["name"], variant=cfg["variant"]).to_dict()
    except ValueError:
        return None
    overrides = {k: v for k, v in cfg.items()
                 if k not in POINT_FIELDS and k not in ("name", "profile") and base.get(k, object()) != v}
    try:
        return GridPoint(cfg["name"], cfg["variant"], cfg["seed"], cfg["fold"], overrides)
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def _grid_ids(profile: str) -> frozenset:
    return frozenset(p.run_id for p in grid(profile))


def is_grid_record(record: dict, profile: Optional[str] = None) -> bool:
    """True when ``record`` is a run of a point of a profile's grid (``profile``, or its own).

    False for a custom run (overrides), an off-grid seed or fold, a config outside the
    registry: the tables keep those apart (:func:`split_records`).
    """
    point = record_point(record)
    if point is None or point.is_custom:
        return False
    prof = profile or point.profile
    return prof in PROFILES and point.profile == prof and point.run_id in _grid_ids(prof)


def split_records(records, profile: Optional[str] = None) -> tuple:
    """``(grid_records, other_records)``: what a profile's tables report, and the custom runs beside them."""
    grid_records, others = [], []
    for r in records:
        (grid_records if is_grid_record(r, profile) else others).append(r)
    return grid_records, others


def grid(profile: str) -> list:
    """The points of ``profile`` (``smoke``, ``quick``, ``paper``, ``sdm`` or ``mnist5k``), in run order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {PROFILES}")
    points = []
    for model, dataset in PAIRS[profile]:
        for method in GRID_METHODS:
            name = f"{profile}/{method}/{model}/{dataset}"
            cfg = CONFIGS[name]
            protocol = "kfold" if cfg.protocol == "kfold" else "holdout"
            seeds = SEEDS[profile][protocol][model]
            folds = FOLDS[profile] if protocol == "kfold" else (0,)
            if isinstance(folds, dict):
                folds = folds[(method, model, dataset)]
            variants = (ADAPT_VARIANTS[profile] if method == "adapt"
                        else FLOAT32_VARIANTS.get(profile, ("reference",)) if method == "float32" else ("reference",))
            for variant in variants:
                for seed in seeds:
                    for fold in folds:
                        points.append(GridPoint(name, variant, seed, fold))
    return points


# ----------------------------------------------------------------------------- records
def failure_record(config: Union[ExperimentConfig, dict, str], message: str) -> dict:
    """A minimal ``adapt.run/1`` record of a run that failed before training wrote its own.

    ``config`` is the run's config (or its dict; or only its name when the config
    itself could not be built, in which case model, dataset and method are read
    from the name).
    """
    if isinstance(config, ExperimentConfig):
        cfg = config.to_dict()
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        parts = str(config).split("/")
        cfg = {"name": str(config), "profile": parts[0] if parts else None,
               "method": parts[1] if len(parts) > 1 else None, "model": parts[2] if len(parts) > 2 else None,
               "dataset": parts[3] if len(parts) > 3 else None, "variant": "reference", "seed": None,
               "fold": None, "protocol": None}
    now = utc_now()
    return {
        "schema": SCHEMA, "name": cfg.get("name"), "status": FAILED, "config": cfg, "environment": {},
        "epochs": [], "traces": {}, "final": {}, "policy": {}, "wall_time_s": 0.0, "started": now,
        "finished": now, "message": message,
    }


def select(points: Sequence[GridPoint], only: Union[str, Sequence[str], None] = None,
           match: Union[str, Sequence[str], None] = None) -> list:
    """The points whose run id is one of ``only`` (exact) or matches one of the ``match`` patterns.

    Patterns are shell-style (:mod:`fnmatch`: ``*``, ``?``, ``[...]``) against the run id
    or the config name, e.g. ``"adapt-resnet20-cifar10-*"`` or ``"*/muppet/*"``.  A selector
    that matches nothing raises ``ValueError`` listing the closest run ids.
    """
    import fnmatch

    pts = list(points)
    if not only and not match:
        return pts
    ids = [p.run_id for p in pts]
    chosen = set()
    for run_id in ([only] if isinstance(only, str) else list(only or [])):
        if run_id not in ids:
            raise ValueError(f"--only {run_id!r} is not a run id of this grid ({_close_ids(run_id, ids)}); "
                             f"--only takes a whole run id, --match a pattern, e.g. --match '{run_id}-*'")
        chosen.add(run_id)
    for pattern in ([match] if isinstance(match, str) else list(match or [])):
        hits = {p.run_id for p in pts if fnmatch.fnmatchcase(p.run_id, pattern)
                or fnmatch.fnmatchcase(p.config_name, pattern)}
        if not hits:
            raise ValueError(f"--match {pattern!r} matches no point of this grid "
                             f"({_close_ids(pattern.strip('*'), ids)}); patterns are shell-style: * ? [...]")
        chosen |= hits
    return [p for p in pts if p.run_id in chosen]


def _close_ids(text: str, ids: Sequence[str], n: int = 5) -> str:
    """'closest: a, b, c (and 7 more)': run ids that start with or contain ``text``, else difflib's."""
    close = [i for i in ids if i.startswith(text)] or [i for i in ids if text in i]
    close = close or difflib.get_close_matches(text, ids, n=n, cutoff=0.4)
    if not close:
        return "list the run ids with --list"
    more = f" (and {len(close) - n} more)" if len(close) > n else ""
    return "closest: " + ", ".join(close[:n]) + more


# ----------------------------------------------------------------------------- shards
def shard(points: Sequence[GridPoint], spec: str) -> list:
    """The ``K/N`` shard of ``points`` (1 <= K <= N): every N-th point starting at the K-th, in grid order.

    Deterministic, so N machines that share a results folder and each run ``--shard K/N``
    for their own K cover the grid once between them.
    """
    try:
        k, n = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected K/N with integers, e.g. 3/8") from None
    if not (n >= 1 and 1 <= k <= n):
        raise ValueError(f"--shard {spec!r}: need 1 <= K <= N (K is 1-based), e.g. 1/{max(n, 1)} ... {max(n, 1)}/{max(n, 1)}")
    return [p for i, p in enumerate(points) if i % n == k - 1]
