"""The plain-text progress lines: the rate counts this session's steps after its first
(the compile), never steps done before a resume, and the ETA follows from it."""

from __future__ import annotations

from jaxnas import workdir as wd


def test_rate_after_a_resume_counts_only_this_sessions_steps(monkeypatch, capsys):
    clock = iter([100.0, 130.0, 140.0])  # after the 1st, 2nd and 3rd step of the session
    monkeypatch.setattr(wd.time, "time", lambda: next(clock))
    progress = wd.Progress(60, initial=50, desc="darts", log_every=1)
    for _ in range(3):
        progress.update(1, {"train_loss": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[darts] step 51/60 train_loss=1"      # the compile: no rate
    # 1 step in 30 s after the first; 8 steps left at that rate: 4 minutes
    assert lines[1] == "[darts] step 52/60 train_loss=1 (0.03 steps/s, 4.0 min left)"
    assert lines[2] == "[darts] step 53/60 train_loss=1 (0.05 steps/s, 2.3 min left)"
