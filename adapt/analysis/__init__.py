"""Analysis: tables, figures and notebook widgets over run records.

* :mod:`adapt.analysis.tables` -- the tables of a profile, the headline, the README's block;
* :mod:`adapt.analysis.plots` -- the figures;
* :mod:`adapt.analysis.interactive` -- the widgets of notebooks 01 and 02.

These modules read records (:mod:`adapt.records`) and use the method library and
:mod:`adapt.experiments` (which records belong to a grid); nothing below imports them.
"""
