"""Progress of long loops: a tqdm bar on a terminal, a few plain lines in a log.

A tqdm bar redraws itself with carriage returns many times a second; written to a file (CI, ``nohup``, a
papermill log) every redraw stays, and a 3-epoch CLI run wrote ~300 of them per epoch. :func:`progress` keeps the
bar where a person watches a terminal and otherwise prints one line every ``step`` of the way (10 % by default)::

    for batch in (bar := progress(loader, desc="epoch 1/8", disable=not verbose)):
        ...
        bar.set_postfix(loss=f"{loss:.4f}")
"""
from __future__ import annotations

import sys
import time


class LogProgress:
    """Iterate ``iterable`` and write ``desc: done/total (percent, seconds) postfix`` to ``file`` each time another
    ``step`` of ``total`` is done, and once at the end. The tqdm method the package calls (``set_postfix``)
    exists, so the two are interchangeable.

    Parameters
    ----------
    iterable
        What to iterate.
    desc
        Label at the start of each line.
    total
        Number of items (default ``len(iterable)`` where it has one; without it, only the final line is written,
        with the count done).
    step
        Fraction of ``total`` between two lines (default 0.1: a line every 10 %).
    file
        Text stream written to (default standard error).
    """

    def __init__(self, iterable, desc: str = "", total: int | None = None, step: float = 0.1, file=None):
        self.iterable, self.desc, self.step, self.file = iterable, desc, float(step), file or sys.stderr
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        """Set the text written after each line's counts, as tqdm's ``set_postfix``.

        Parameters
        ----------
        **values
            Shown as ``key=value``, comma-separated, in the order given; replaces the previous postfix.
        """
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, done: int, start: float) -> None:
        counts = f"{done}/{self.total} ({100 * done / self.total:.0f} %, " if self.total else f"{done} ("
        postfix = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {counts}{time.perf_counter() - start:.0f} s){postfix}", file=self.file, flush=True)

    def __iter__(self):
        start, done, shown = time.perf_counter(), 0, 0
        parts = max(1, round(1 / self.step))  # a line each time another 1 / parts of the total is done
        for item in self.iterable:
            yield item
            done += 1
            if self.total and done < self.total and done * parts // self.total > shown:
                shown = done * parts // self.total
                self._line(done, start)
        self._line(done, start)


def progress(iterable, *, desc: str = "", total: int | None = None, disable: bool = False, leave: bool = False,
             file=None):
    """A progress bar over ``iterable`` suited to where the output goes.

    Parameters
    ----------
    iterable
        What to iterate.
    desc, total
        Label and length (default ``len(iterable)`` where it has one).
    disable
        No progress output at all.
    leave
        Keep a terminal bar after the loop (tqdm's ``leave``).
    file
        Where progress goes (default standard error). A terminal gets a tqdm bar; anything else (a file, a pipe,
        a notebook kernel's stream) gets :class:`LogProgress`: a line every 10 % and one at the end.

    Returns
    -------
    tqdm or LogProgress
        An iterable over ``iterable``'s items with a ``set_postfix`` method (a silent tqdm when ``disable``).
    """
    from tqdm import tqdm

    stream = file or sys.stderr
    if disable or getattr(stream, "isatty", lambda: False)():  # disabled: tqdm's silent bar keeps its methods
        return tqdm(iterable, desc=desc, total=total, leave=leave, file=stream, disable=disable)
    return LogProgress(iterable, desc=desc, total=total, file=stream)
