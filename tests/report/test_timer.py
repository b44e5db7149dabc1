"""StageTimer: each demo stage's time, summed over reruns into one folder."""
from __future__ import annotations

import json

from ptxssl import report
from ptxssl.report import StageTimer, timer


def test_stage_timer_sums_stages_over_runs(tmp_path, monkeypatch):
    clock = iter([0.0, 2.0, 12.0, 100.0, 101.5])  # indented lines read no time
    monkeypatch.setattr(timer.time, "perf_counter", lambda: next(clock))
    first = StageTimer(tmp_path)
    pretrain = f"pretrain -> {tmp_path}/pretrain/vae"
    for text in ("synth", pretrain, "  a compare line", "done"):  # indented lines are not stages
        first.stage(text)
    second = StageTimer(tmp_path)  # a rerun: synth is skipped, pretrain resumes
    second.stage(pretrain)
    second.stage("done")
    log = json.loads((tmp_path / report.TIMINGS).read_text())
    assert log == {"runs": 2, "stages": {"synth": 2.0, "pretrain -> pretrain/vae": 11.5}}
