"""Progress on stderr while a diagnosis runs: a bar on a terminal, plain lines in logs.

The probe, the search and the confirmation report as ``progress(stage, done,
total, text)``, ``text`` saying what is being tried (``trial 3: trying
He-normal initializer``).  On a terminal each stage gets a
``click.progressbar`` with that text beside it; when stderr is a file, a pipe
or a CI log, each event is one plain line (``searching: 2/10 trial 3: trying
... [14s]``) and the probe says only where it starts and ends, so logs stay
short and grep-able.
"""

from __future__ import annotations

import sys
import time

import click

LABELS = {"probe": "probing", "search": "searching", "confirm": "confirming"}


class Progress:
    """The ``progress`` callback of :func:`gradadvisor.api.run_diagnosis` for the command line.

    Use it as a context manager, so that a bar left open by an error or
    Ctrl-C is closed before the error line is printed.

    Args:
        enabled: False prints nothing (``--quiet``).
        stream: Where to write; None for the ``sys.stderr`` of each call.
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream
        self.started = time.perf_counter()
        self.stage = None
        self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, stage: str, done: int, total: int, text: str = "") -> None:
        if not self.enabled:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        if _is_terminal(stream):
            self._bar(stream, stage, done, total, text)
        else:
            self._line(stream, stage, done, total, text)
        self.stage = stage

    def close(self) -> None:
        """End the open bar, if any, with a newline."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def _bar(self, stream, stage, done, total, text) -> None:
        if self.bar is None or stage != self.stage or self.bar.length != total:
            self.close()
            self.bar = click.progressbar(length=total, label=LABELS.get(stage, stage), file=stream, show_pos=True,
                                         show_eta=True, item_show_func=lambda item: item)
            self.bar.__enter__()
        # The text changes without a step (a trial starts), and click
        # redraws only on a step: redraw by hand then.
        self.bar.current_item = text or None
        if done > self.bar.pos:
            self.bar.update(done - self.bar.pos)
        else:
            self.bar.render_progress()

    def _line(self, stream, stage, done, total, text) -> None:
        # In a log, a probe's every step would be noise: its first and last do.
        if stage == "probe" and stage == self.stage and done < total:
            return
        elapsed = time.perf_counter() - self.started
        line = f"{LABELS.get(stage, stage)}: {done}/{total} {text}".rstrip() + f" [{elapsed:.0f}s]"
        click.echo(line, file=stream)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
