"""`ocdspy replay`: held-out turns re-run in real OpenCode and scored by what happened.

turns.py      which turns, and what the recording says about each
workspace.py  the turn's starting files in a temp folder (snapshot store, folder, revision)
run.py        one headless OpenCode run, its event stream watched (loops, step cap, timeout)
score.py      the run against the recording: evaluate's metric, changed files
report.py     the report and the resumable state
runner.py     all of it, turn by turn
"""

from __future__ import annotations

from ocdspy.replay.runner import ReplayResult, replay

__all__ = ["ReplayResult", "replay"]
