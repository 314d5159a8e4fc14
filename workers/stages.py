"""When a run with `then=[...]` closes, its next stage starts (see `pipeline.stages`)."""

from __future__ import annotations

from pipeline.runs import when_run_closes
from pipeline.stages import start_next_stage

when_run_closes(start_next_stage)
