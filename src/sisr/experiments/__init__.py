"""The papers' experiments: ablation and results tables as data, run with the training engine.

>>> from sisr.experiments import list_experiments, run_experiment, ExperimentOptions
>>> [e.name for e in list_experiments()][:2]                                    # doctest: +SKIP
>>> run_experiment("defian-table4", "runs/defian-t4", ExperimentOptions(iterations=1000, seeds=2))  # doctest: +SKIP

Definitions live in ``tables/*.yaml`` (one per paper table); :mod:`.runner` trains and scores the
variants into a resumable folder; :mod:`.table` renders that folder in the paper's layout.
"""

from .definitions import EvalRow, Experiment, Variant, get_experiment, list_experiments
from .runner import ExperimentOptions, run_experiment
from .table import collect, render, write_table

__all__ = ["EvalRow", "Experiment", "ExperimentOptions", "Variant", "collect", "get_experiment",
           "list_experiments", "render", "run_experiment", "write_table"]
