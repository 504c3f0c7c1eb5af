"""Where a piece's time goes, from py-spy's raw (collapsed) samples: ``python -m benchmarks.profile FILE``.

Each sample is one stack of one thread: py-spy samples every thread it does not see idle, so the shares are
of thread samples, not of the run's wall. A stack counts as *ours* when a frame of ``churn_assets`` is on
it (polars' native work called from our code included), as *imports* while modules load, as *Dagster*
when a frame of Dagster is on it, and as *other* otherwise: mostly thread-pool workers waiting for work
(``concurrent.futures``' ``_worker``, which py-spy does not always see idle) and the benchmark's own memory
sampler (37 % of a ``small`` chain's samples, 2026-11-30). Within ours, samples are grouped by the innermost
``churn_assets`` function and by the native or library frame they were in (Parquet decode, JSON parsing,
group-by ...); within Dagster, by the innermost Dagster function.
"""

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match["func"], match["file"]) if match else (frame, "")


def _short(func: str, file: str) -> str:
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/churn_assets/" in file:
        file = "churn_assets/" + file.split("/churn_assets/", 1)[1]
    return f"{func} ({file})" if file else func


def _is_ours(file: str) -> bool:
    # py-spy writes paths relative to sys.path entries: "churn_assets/assets/..." or absolute ones.
    return file.startswith("churn_assets/") or "/churn_assets/" in file


def _is_dagster(file: str) -> bool:
    return file.startswith(("dagster/", "dagster_")) or "/dagster/" in file


def _library(func: str, file: str) -> str | None:
    """A native or library frame worth naming (polars, pyarrow, xgboost, zlib, json ...)."""
    lowered = f"{func} {file}".lower()
    for name in ("polars", "pyarrow", "xgboost", "sklearn", "evidently", "numpy", "pandas", "zlib", "json",
                 "sqlite", "fsync"):
        if name in lowered:
            return name
    return None


def summarize(path: Path | str, top: int = 12) -> str:
    samples: list[tuple[list[tuple[str, str]], int]] = []
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples.append(([_parse(f) for f in stack.split(";")], int(count)))
    total = sum(n for _, n in samples)
    if not total:
        return f"no samples in {path}"
    categories: Counter = Counter()
    ours_by_function: Counter = Counter()
    ours_by_leaf: Counter = Counter()
    dagster_by_function: Counter = Counter()
    for frames, n in samples:
        if any("importlib._bootstrap" in file or func == "<module>" for func, file in frames[-25:]) and not any(
            _is_ours(file) and func != "<module>" for func, file in frames
        ):
            categories["imports"] += n
            continue
        ours = [(f, file) for f, file in frames if _is_ours(file)]
        if ours:
            categories["ours"] += n
            ours_by_function[_short(*ours[-1])] += n
            innermost = frames.index(ours[-1])
            below = [_library(f, file) for f, file in frames[innermost + 1:]]
            ours_by_leaf[next((lib for lib in reversed(below) if lib), "python")] += n
            continue
        dagster = [(f, file) for f, file in frames if _is_dagster(file)]
        if dagster:
            categories["dagster"] += n
            dagster_by_function[_short(*dagster[-1])] += n
        else:
            categories["other"] += n

    def table(title: str, counter: Counter) -> list[str]:
        lines = [f"  {title}:"]
        for name, n in counter.most_common(top):
            lines.append(f"    {100 * n / total:5.1f} %  {name}")
        return lines

    lines = [f"profile {path}: {total} samples: " + ", ".join(
        f"{name} {100 * n / total:.1f} %" for name, n in categories.most_common()
    )]
    lines += table("ours, by innermost churn_assets function", ours_by_function)
    lines += table("ours, by the library the time was spent in", ours_by_leaf)
    lines += table("Dagster, by innermost dagster function", dagster_by_function)
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(summarize(argument))
