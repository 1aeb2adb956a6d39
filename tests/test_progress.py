"""Progress on stderr: click's progress bar on a terminal, plain lines in a log."""

import io
import re

from gradadvisor.report.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def events(progress):
    with progress:
        for step in range(1, 6):
            progress("probe", step, 5)
        progress("search", 0, 3, "trial 1: trying ReLU activation")
        progress("search", 1, 3, "best score so far 0.5")
        progress("confirm", 0, 2, "training the original")


def test_a_log_gets_one_plain_line_per_event_and_the_probe_only_at_its_ends():
    log = io.StringIO()
    events(Progress(stream=log))
    lines = [line.rsplit(" [", 1)[0] for line in log.getvalue().splitlines()]
    assert lines == ["probing: 1/5", "probing: 5/5", "searching: 0/3 trial 1: trying ReLU activation",
                     "searching: 1/3 best score so far 0.5", "confirming: 0/2 training the original"]
    assert "\r" not in log.getvalue() and "\033" not in log.getvalue()


def test_a_terminal_gets_a_bar_per_stage_that_says_what_is_tried():
    terminal = Terminal()
    events(Progress(stream=terminal))
    # click hides the cursor while a bar is drawn, and shows it again at the end.
    text = re.sub(r"\x1b\[\?25[lh]", "", terminal.getvalue())
    redraws = text.split("\r")
    assert any(part.startswith("probing") and "5/5" in part for part in redraws)
    assert any(part.startswith("searching") and "0/3" in part and "trying ReLU activation" in part
               for part in redraws)
    assert any(part.startswith("confirming") and "training the original" in part for part in redraws)
    # Each stage's bar ends with its own line; the last one is closed on leaving the block.
    assert text.count("\n") == 3 and text.endswith("\n")


def test_quiet_prints_nothing():
    terminal = Terminal()
    events(Progress(enabled=False, stream=terminal))
    assert terminal.getvalue() == ""
