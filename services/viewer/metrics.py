"""Prometheus metrics of the viewer, read at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rlrings.services.viewer.viewer import Viewer


class ViewerCollector(Collector):
    def __init__(self, viewer: Viewer):
        self.viewer = viewer

    def collect(self):
        viewer = self.viewer
        sessions = GaugeMetricFamily("rlrings_viewer_sessions", "Open watch and play sessions.", labels=["mode"])
        for mode in ("watch", "play"):
            sessions.add_metric([mode], viewer.open_sessions.get(mode, 0))
        frames = CounterMetricFamily("rlrings_viewer_frames", "Frames rendered for viewers.")
        frames.add_metric([], viewer.frames_rendered)
        demos = CounterMetricFamily("rlrings_viewer_demonstrations", "Played episodes stored.", labels=["ended"])
        demos.add_metric(["finished"], sum(not d.truncated for d in viewer.demonstrations))
        demos.add_metric(["cut_short"], sum(d.truncated for d in viewer.demonstrations))
        steps = CounterMetricFamily("rlrings_viewer_demonstration_steps", "Played steps stored in replay.")
        steps.add_metric([], sum(d.steps for d in viewer.demonstrations))
        yield from (sessions, frames, demos, steps)
