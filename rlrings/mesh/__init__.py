"""``rlrings up``: the whole mesh on one machine, on the embedded store.

Replay, parameter, a learner (or a ring of learner ranks) and N actors each
run as their own process on a free loopback port, exactly as they would in a
cluster. Three parts: ``plan`` (every service's settings, a pure function), ``supervisor``
(the processes), ``report`` (the live view, the summary and the plot). The supervisor writes each service's config
file into the run directory, starts the processes, restarts any that die (a
ring restarts as a whole, from its last checkpoint), shows live progress from the
services' status RPCs, runs the evaluator (frozen published versions on
fresh episodes, ``rlrings.mesh.evaluation``), and at the end stops them in order and
writes a summary (``summary.json``) and a plot of return against env steps and
time (``returns.png``).

"Solved" is the env's own definition, judged on fresh episodes: the mean
greedy return of one frozen version over ``confirm_episodes`` (100 for
CartPole-v1) consecutive evaluation episodes reaches the threshold, in each of
``confirm_windows`` (2) independent windows, and their mean clears it by
``confirm_sigmas`` (2.5) standard errors of one window's mean.
"""

from rlrings.mesh.config import MeshConfig
from rlrings.mesh.plan import TABLE, plan
from rlrings.mesh.supervisor import Mesh, run_mesh

__all__ = ["TABLE", "Mesh", "MeshConfig", "plan", "run_mesh"]
