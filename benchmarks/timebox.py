"""Parts of a benchmark run as subprocesses, each in its own time box, their rows printed as they come.

A part is a command (usually the benchmark script itself with `--part NAME`). It reports by printing
lines `@row {"check": ..., "measured": ..., "target": ..., "verdict": ...}` and `@value {"key": value}`
on its stdout (`emit_row`, `emit_values`); its other output goes to the parent's stderr as it comes.
The parent (`run_parts`) prints each row as a markdown table row the moment it arrives. A part that
raises, exits non-zero, or outlives its box (then its whole process group is killed) gets a row saying
so, and the next part starts. The parts share one overall budget: a part's box is cut to what is left,
and a part that would get less than MIN_BOX seconds is skipped, with a row saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ROW, VALUE = "@row ", "@value "
MIN_BOX = 5.0  # seconds: less than a Python process with torch needs to start
HEADER = "| check | measured | target | verdict |\n|---|---|---|---|"


@dataclass
class Row:
    check: str
    measured: str
    target: str = ""
    verdict: str = ""

    def markdown(self) -> str:
        return f"| {self.check} | {self.measured} | {self.target} | {self.verdict} |"


@dataclass
class Part:
    name: str
    command: list[str]
    box: float  # seconds


@dataclass
class Outcome:
    """What a part gave: its rows and values, and how it ended ("ok", "failed", "timed out", "skipped")."""

    status: str = "ok"
    rows: list[Row] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    seconds: float = 0.0


# -- inside a part ------------------------------------------------------------------------------------


def emit_row(check: str, measured: str, target: str = "", verdict: str = "") -> None:
    print(ROW + json.dumps(Row(check, measured, target, verdict).__dict__), flush=True)


def emit_values(**values) -> None:
    print(VALUE + json.dumps(values), flush=True)


def failure(exc: BaseException) -> str:
    """`failed: Type: first line of the message` (a row's measured text)."""
    message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"failed: {type(exc).__name__}: {message}"


# -- the parent ---------------------------------------------------------------------------------------


def _pump(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def run_part(part: Part, box: float, show: Callable[[Row], None], log=sys.stderr) -> Outcome:
    """Run one part for at most `box` seconds; `show` gets each of its rows as it arrives."""
    outcome, started = Outcome(), time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(part.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # its own process group: a timeout kills its children too
    lines: queue.Queue = queue.Queue()
    last_errors: deque[str] = deque(maxlen=3)

    def relay_errors():
        for line in process.stderr:
            log.write(line)
            log.flush()
            if line.strip():
                last_errors.append(line.strip())

    threads = [threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True),
               threading.Thread(target=relay_errors, daemon=True)]
    for thread in threads:
        thread.start()
    deadline = started + box
    timed_out = False
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.perf_counter(), 0.0))
        except queue.Empty:
            timed_out = True
            break
        if line is None:
            break
        if line.startswith(ROW):
            row = Row(**json.loads(line[len(ROW):]))
            outcome.rows.append(row)
            show(row)
        elif line.startswith(VALUE):
            outcome.values.update(json.loads(line[len(VALUE):]))
        else:
            log.write(line)
            log.flush()
    if not timed_out:
        try:
            process.wait(timeout=max(deadline - time.perf_counter(), 0.0))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for thread in threads:
        thread.join(timeout=2)
    outcome.seconds = time.perf_counter() - started
    if timed_out:
        outcome.status = "timed out"
        show(_own_row(outcome, Row(part.name, f"timed out after {box:.0f} s (its time box); the rows above "
                                              "are what it measured before", verdict="not met")))
    elif process.returncode != 0:
        outcome.status = "failed"
        if not any(r.measured.startswith("failed") for r in outcome.rows):  # it died without saying why
            reason = last_errors[-1][:160] if last_errors else "no message"
            show(_own_row(outcome, Row(part.name, f"failed: exit {process.returncode}: {reason}")))
    return outcome


def _own_row(outcome: Outcome, row: Row) -> Row:
    outcome.rows.append(row)
    return row


def run_parts(parts: list[Part], budget: float, show: Callable[[Row], None] | None = None,
              log=sys.stderr) -> dict[str, Outcome]:
    """Run `parts` one after another within `budget` seconds in all; returns each part's Outcome by name.
    `show` (default: print the row to stdout, flushed) gets every row as it comes."""
    if show is None:
        def show(row: Row) -> None:
            print(row.markdown(), flush=True)
    outcomes, started = {}, time.perf_counter()
    for part in parts:
        left = budget - (time.perf_counter() - started)
        if left < MIN_BOX:
            outcome = Outcome(status="skipped")
            show(_own_row(outcome, Row(part.name, f"skipped: the run's budget of {budget:.0f} s is spent")))
        else:
            outcome = run_part(part, min(part.box, left), show, log)
        outcomes[part.name] = outcome
    return outcomes
