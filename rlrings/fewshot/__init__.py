"""Few-shot experiments: pre-train or meta-train across a family's training tasks,
adapt to each held-out task with K episodes or demonstrations, and compare.

``rlrings experiment fewshot`` is the entry point (:func:`run_experiment`);
``adaptation`` holds the learning, ``jobs`` what a worker runs, ``report``
the statistics, table and plot.
"""

from rlrings.fewshot.experiment import Experiment, FewShotConfig, run_experiment

__all__ = ["Experiment", "FewShotConfig", "run_experiment"]
