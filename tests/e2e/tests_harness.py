"""The harness's own rules (run.py), shown on stand-in tests."""
import contextlib
import io

from common import test


def _run(fn, steps):
    """run_one(fn) with the clock's steps read from `steps` (one per reading): its verdict and
    what it printed."""
    import run  # (run.py is __main__ here; as a module it registers nothing again)
    readings = iter(steps)
    real = run.clock_step
    run.clock_step = lambda: next(readings)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            ok = run.run_one(fn, None)
    finally:
        run.clock_step = real
    return ok, out.getvalue()


def _counting(fail_times):
    """A stand-in test that fails its first fail_times runs."""
    def stand_in(args):
        stand_in.runs += 1
        assert stand_in.runs > fail_times, f"run {stand_in.runs} fails"
    stand_in.runs = 0
    return stand_in


@test
def harness_clock_step_reruns(args):
    """A failure during which the wall clock stepped is run once more, and that run decides;
    any other failure stands at once, and a pass is not run again."""
    fn = _counting(1)
    ok, out = _run(fn, [100.0, 97.0, 97.0, 97.0])  # back 3 s during the first run
    assert ok and fn.runs == 2, (ok, fn.runs, out)
    assert "stepped by -3.0 s; running it again" in out and "ok   stand_in" in out, out
    fn = _counting(2)
    ok, out = _run(fn, [100.0, 97.0, 97.0, 92.0])  # fails twice, stepping both times: twice only
    assert not ok and fn.runs == 2 and "FAIL stand_in" in out, (ok, fn.runs, out)
    fn = _counting(1)
    ok, out = _run(fn, [100.0, 100.2])  # no step (0.2 s of drift): the failure stands
    assert not ok and fn.runs == 1 and "running it again" not in out and "FAIL stand_in" in out, (ok, fn.runs, out)
    fn = _counting(0)
    ok, out = _run(fn, [100.0, 50.0])  # a pass, whatever the clock did
    assert ok and fn.runs == 1 and "again" not in out, (ok, fn.runs, out)
