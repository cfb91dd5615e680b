"""Wall time of named stages, for logs."""
import time
from contextlib import contextmanager
from typing import Optional


class StageClock:
    """Adds the wall seconds of named stages to ``timings``.

    ``with clock('knn'): ...`` adds the block's duration to
    ``timings['knn']``; with ``timings=None`` it times nothing, so plain
    functions can take an optional dict at no cost to callers that do not
    ask.
    """

    def __init__(self, timings: Optional[dict]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str):
        if self.timings is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + \
                time.perf_counter() - start
