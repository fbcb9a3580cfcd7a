"""Progress output suited to where it goes: a few plain lines in a log, a tqdm bar on a terminal, nothing when
disabled - and the same iteration in every case."""
import io

from cisformer.utils.progress import LogProgress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_every_tenth_and_one_at_the_end():
    log = io.StringIO()
    bar = progress(range(1000), desc="epoch 1/3", file=log)
    assert isinstance(bar, LogProgress)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss=f"{i:.1f}")
    lines = log.getvalue().splitlines()
    assert seen == list(range(1000)) and "\r" not in log.getvalue()
    assert len(lines) == 10 and lines[0].startswith("epoch 1/3: 100/1000 (10 %") and lines[0].endswith("loss=99.0")
    assert lines[-1].startswith("epoch 1/3: 1000/1000 (100 %")


def test_short_loops_and_unknown_lengths_stay_short():
    log = io.StringIO()
    assert list(progress(iter(range(7)), desc="cells", file=log)) == list(range(7))
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[0]] and "cells: 7 (" in log.getvalue()
    log = io.StringIO()
    list(progress(range(3), desc="three", file=log))
    assert len(log.getvalue().splitlines()) == 3


def test_a_terminal_gets_tqdm_and_disabled_writes_nothing():
    term = _Terminal()
    assert list(progress(range(5), desc="bar", file=term)) == list(range(5))
    assert "\r" in term.getvalue() or "bar" in term.getvalue()
    quiet = io.StringIO()
    bar = progress(range(5), desc="none", file=quiet, disable=True)
    for _ in bar:
        bar.set_postfix(loss="1")
    assert quiet.getvalue() == ""
