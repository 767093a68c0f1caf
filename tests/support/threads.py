"""A context manager that keeps torch on one thread."""

from __future__ import annotations

import torch


class single_thread:
    """Keep torch to one thread: the test machine is shared and results stay reproducible."""

    def __enter__(self) -> None:
        self.old = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)
