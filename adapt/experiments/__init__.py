"""Experiment machinery: the named configs, the grid of each profile, and running it.

* :mod:`adapt.experiments.configs` -- the named configs with the papers' hyperparameters;
* :mod:`adapt.experiments.grid` -- the points of each profile and which records belong to it;
* :mod:`adapt.experiments.runner` -- training a point, running a grid, reading its state;
* :mod:`adapt.experiments.claims` -- one process per point;
* :mod:`adapt.experiments.cluster` -- points as SLURM jobs through submitit;
* :mod:`adapt.experiments.ablation` -- every reference-vs-corrected option, alone;
* :mod:`adapt.experiments.compare` -- where two run records first differ.

These modules use the method library (:mod:`adapt`'s top-level modules) and never the
analysis (:mod:`adapt.analysis`).
"""
