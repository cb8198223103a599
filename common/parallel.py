"""Map a function over a list in chunks, on all cores, keeping the input order."""
import os
from multiprocessing import get_context
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_PER_WORKER = 200  # below this a process pool costs more than it saves


def chunked_map(fn: Callable[[list[T]], list[R]], items: Sequence[T], num_workers: int | None = None,
                chunk: int = 64, desc: str = "", progress: bool = False) -> list[R]:
    """fn(chunk) -> one result per item; num_workers None = all cores, 1 = in this process.

    fn must be a module-level function (it is sent to forked workers by name).
    """
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, num_workers)
    workers = min(workers, max(1, len(items) // MIN_ITEMS_PER_WORKER))
    chunks = [list(items[i:i + chunk]) for i in range(0, len(items), chunk)]
    out: list[R] = []
    with tqdm(total=len(items), desc=desc, unit="sample", disable=not progress) as bar:
        if workers == 1:
            results = map(fn, chunks)
        else:
            pool = get_context("fork").Pool(workers)
            results = pool.imap(fn, chunks)
        try:
            for part in results:
                out.extend(part)
                bar.update(len(part))
        finally:
            if workers > 1:
                pool.close()
                pool.join()
    return out
