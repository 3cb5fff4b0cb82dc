"""adapt: a replication package of AdaPT (Adaptive Precision Training, Kummer et al., arXiv 2107.13490).

One module per concept: :mod:`adapt.quant` (number formats and quantizers),
:mod:`adapt.layers` (quantized execution), :mod:`adapt.policies` (the precision-policy
interface, float32 and fixed precision), :mod:`adapt.heuristic` (AdaPT),
:mod:`adapt.muppet` (MuPPET), :mod:`adapt.costmodel`, :mod:`adapt.export`,
:mod:`adapt.models`, :mod:`adapt.data`, :mod:`adapt.train`, :mod:`adapt.experiments.configs`,
:mod:`adapt.records`, :mod:`adapt.analysis.tables`, :mod:`adapt.analysis.plots`; running experiments:
:mod:`adapt.experiments.grid` (the points of each profile, ``python -m adapt grid``),
:mod:`adapt.experiments.runner` (training them), :mod:`adapt.experiments.claims` (one process per point),
:mod:`adapt.experiments.cluster` (SLURM through submitit), :mod:`adapt.progress`, :mod:`adapt.paths`,
:mod:`adapt.experiments.compare`, :mod:`adapt.cli` (the ``adapt`` command) and :mod:`adapt.cpu_memory`
(keeping freed memory while training on CPU).  Submodules are
imported on use so that ``import adapt`` stays light.
"""
__version__ = "0.1.0"
