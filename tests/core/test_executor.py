"""The local executor: in-process and with worker processes, the same results in the driver."""

from __future__ import annotations

import os

import pytest

from geopak_core.errors import GeopakError
from geopak_core.executor import LocalExecutor, make_executor


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_processes_give_every_result_once_to_the_driver():
    units = [(f"u{i:03d}", (i,)) for i in range(12)]
    seen: dict[str, int] = {}
    pids: set[int] = set()

    def on_done(name: str, result: tuple[int, int]) -> None:
        assert name not in seen
        seen[name] = result[0]
        pids.add(result[1])

    LocalExecutor(processes=2).run_units(square_and_pid, units, on_done)
    assert seen == {f"u{i:03d}": i * i for i in range(12)}
    assert os.getpid() not in pids  # the work ran in worker processes

    inline: dict[str, int] = {}
    LocalExecutor().run_units(square_and_pid, units, lambda n, r: inline.__setitem__(n, r[0]))
    assert inline == seen and list(inline) == [u for u, _ in units]  # plan order in-process


def test_unknown_executor_is_one_line():
    with pytest.raises(GeopakError, match="unknown executor 'spark'"):
        make_executor("spark")
