"""How long each `ptxssl demo` stage took: measured as the demo runs, shown by the report.

The demo is resumable (a rerun skips finished stages), so one run's clock would show only
the stages that run redid; the timer keeps its sums in the demo folder and adds to them, and
the report's timings section reads that file back like any other stage output.
"""
from __future__ import annotations

import time
from pathlib import Path

from ptxssl.files import write_json
from ptxssl.report.read import missing, read_json
from ptxssl.report.render import Heading, Table, Text

TIMINGS = "timings.json"  # StageTimer's file: {"runs": n, "stages": {stage text: seconds}}


class StageTimer:
    """Adds up the wall-clock time of each `ptxssl demo` stage in `demo_dir/timings.json`.

    A stage's time is known when the next stage starts. Times are summed over every run into
    the folder, keyed by the stage's text: a rerun skips finished stages, so rerunning the demo
    (to refresh the report, or to resume after Ctrl-C) keeps what the earlier run measured, and a
    resumed stage shows its parts together. Paths inside the folder are shown relative to it.
    Indented lines (compare's per-run echoes) belong to the stage above them and are not stages.
    """

    def __init__(self, demo_dir: str | Path) -> None:
        self.path = Path(demo_dir) / TIMINGS
        self.prefix = f"{demo_dir}/"  # dropped from the stage text: short rows, same keys if the folder moves
        old = read_json(self.path)
        self.stages: dict[str, float] = old.get("stages", {}) if isinstance(old, dict) else {}
        self.runs = (old.get("runs", 0) if isinstance(old, dict) else 0) + 1
        self.current: tuple[str, float] | None = None

    def stage(self, text: str) -> None:
        """Close the running stage and open `text` (at the current time)."""
        if text.startswith(" "):
            return
        now = time.perf_counter()
        if self.current:
            name, start = self.current
            self.stages[name] = round(self.stages.get(name, 0.0) + now - start, 1)
        self.current = (text.replace(self.prefix, ""), now)
        write_json(self.path, {"runs": self.runs, "stages": self.stages})


def timings_section(d: Path) -> list:
    """The stage timings table (the `info` lines are bookkeeping, not work, and are left out)."""
    log = read_json(d / TIMINGS)
    out = [Heading("Stage timings")]
    if not isinstance(log, dict) or not log.get("stages"):
        return out + [missing("Stage timings", d / TIMINGS, "they are written by `ptxssl demo` as it runs")]
    rows = [[name, f"{sec:.1f}"] for name, sec in log["stages"].items() if not name.startswith("info ")]
    total = sum(log["stages"].values())
    text = (f"Wall-clock time of each stage, summed over the {log.get('runs', 1)} `ptxssl demo` run(s) into this "
            "folder (a rerun skips finished stages, so a stage resumed after an interruption shows its parts "
            f"added up); {total:.0f} s in all. The report's own stage is timed from the next run on.")
    return out + [Text(text), Table(["stage", "took, s"], rows)]
