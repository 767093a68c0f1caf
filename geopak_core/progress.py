"""Progress bars and logging shared by every command.

On a terminal, bars show counts, rate and ETA (tqdm) on stderr. When stderr is not a
terminal (a log file, CI, a pipe), carriage-return frames would pile up as garbage, so the
same bars print plain lines instead, one every ``GEOPAK_PROGRESS_INTERVAL`` seconds (default
15) plus a final one. ``GEOPAK_NO_PROGRESS=1`` turns them off. ``-v`` on any command turns on
debug logging. Python warnings are logged as one line (category and message), without the
source line that ``warnings`` would print.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("geopak")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (it may be swapped, e.g. by test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: int = 0) -> None:
    """Route all logging to stderr in one format (DEBUG with ``-v``), replacing earlier handlers
    so a second call from a CLI or a test never doubles every line."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("geopak").setLevel(level)
    logging.getLogger("geopak_model").setLevel(level)
    if verbose > 1:
        root.setLevel(logging.DEBUG)
    warnings.showwarning = _log_warning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the commands: one log line, no echoed source line (with
    -v the origin is added, for whoever debugs it)."""
    where = f" ({os.path.basename(filename)}:{lineno})" if log.isEnabledFor(logging.DEBUG) else ""
    logging.getLogger("geopak").warning("%s: %s%s", category.__name__, message, where)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class LineBar(tqdm):
    """tqdm for logs: the same counters as plain lines (no carriage returns, no bar), one per
    ``mininterval`` plus a final line at close."""

    @staticmethod
    def status_printer(file: Any) -> Any:
        def print_status(s: str) -> None:
            s = s.strip("\r\n ")
            if s:
                file.write(s + "\n")
                file.flush()

        return print_status

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # the clearing call tqdm makes at close: nothing to clear in a log
            return False
        if msg is None and self.n == 0 and not getattr(self, "_final_line", False):
            return False  # nothing done yet: no line
        state = (self.n, self.postfix)
        if msg is None and getattr(self, "_printed", None) == state:
            return False  # no news since the last line
        self._printed = state
        self.sp(self.__str__() if msg is None else msg)
        return True

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)  # shown with the next line, not a line each

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def close(self) -> None:
        if not self.disable and not getattr(self, "_final_line", False):
            self._final_line = True
            if self.n or self.total:
                self.display()
        self.leave = False
        super().close()


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar with the project's defaults (counts, rate, ETA; quiet when disabled)."""
    disable = os.environ.get("GEOPAK_NO_PROGRESS", "") not in ("", "0")
    if _stderr_is_terminal():
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            disable=disable,
            mininterval=0.5,
            dynamic_ncols=True,
            file=sys.stderr,
            **kwargs,
        )
    try:
        interval = float(os.environ.get("GEOPAK_PROGRESS_INTERVAL", "") or 15.0)
    except ValueError:
        interval = 15.0
    kwargs.pop("leave", None)
    return LineBar(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        mininterval=interval,
        maxinterval=max(interval, 10.0),
        bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]",
        file=sys.stderr,
        leave=False,
        **kwargs,
    )
