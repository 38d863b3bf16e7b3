"""Books in dask DataFrames: priced partition by partition, aggregated across
partitions (needs ``dask[dataframe]``; ``distributed`` for a cluster).

Each partition goes through `gpu_pricer.book` as an Arrow table: `price_frame`
is a lazy ``map_partitions``; `aggregate_frame` and `scenario_frame` compute a
partial result per partition (`gpu_pricer.book.Aggregator`,
`gpu_pricer.book.ScenarioPnL`) on the workers and merge the partials in a tree,
so no worker ever holds more than a partition and the sums of its groups.

Example (a LocalCluster; any dask scheduler works)::

    from dask.distributed import Client, LocalCluster
    import dask.dataframe as dd
    from gpu_pricer import dask as gpd

    with LocalCluster(processes=False) as cluster, Client(cluster):
        frame = dd.read_parquet("book/*.parquet")
        priced = gpd.price_frame(frame, greeks="all")       # lazy
        priced.to_parquet("priced/")                         # computed here
        totals = gpd.aggregate_frame(priced, by=["desk"])    # a pyarrow Table
        pnl = gpd.scenario_frame(frame, "spot=-20%:+20%:9", by=["desk"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from dask.delayed import delayed

from . import book

#: Partials merged per step of the tree reduction.
FAN_IN = 8


def _table(part: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(part, preserve_index=False)


def _price_partition(part: pd.DataFrame, model: str, greeks: str | tuple[str, ...],
                     backend: str, dtype: str) -> pd.DataFrame:
    priced = book.price_book(_table(part), model=model, greeks=greeks, backend=backend,
                             dtype=dtype)
    out: pd.DataFrame = priced.to_pandas()
    out.index = part.index
    return out


def price_frame(frame: Any, *, model: str = "bsm", greeks: str | Iterable[str] = (),
                backend: str = "auto", dtype: str = "float64") -> Any:
    """The frame with price, the Greeks and error appended, per partition (lazy).

    Args and columns as `gpu_pricer.book.price_book`; the partitions keep
    their index.  A NaN or missing value in a numeric column is a row error,
    never a dropped row.
    """
    names = greeks if isinstance(greeks, str) else tuple(greeks)
    meta = _price_partition(frame._meta, model, names, "numpy", dtype)
    return frame.map_partitions(_price_partition, model, names, backend, dtype, meta=meta)


def _aggregate_partition(part: pd.DataFrame, by: tuple[str, ...],
                         greeks: tuple[str, ...] | None) -> book.Aggregator:
    agg = book.Aggregator(by, greeks)
    agg.add(_table(part))
    return agg


def _merge_aggregates(parts: list[book.Aggregator]) -> book.Aggregator:
    first = parts[0]
    for other in parts[1:]:
        first.merge(other)
    return first


def _scenario_partition(part: pd.DataFrame, grid: book.ScenarioGrid, model: str,
                        by: tuple[str, ...], backend: str, dtype: str) -> book.ScenarioPnL:
    pnl = book.ScenarioPnL(grid, model=model, by=by, backend=backend, dtype=dtype)
    pnl.add(_table(part))
    return pnl.partial()


def _merge_scenarios(parts: list[book.ScenarioPnL]) -> book.ScenarioPnL:
    first = parts[0]
    for other in parts[1:]:
        first.merge(other)
    return first


def _tree(partials: list[Any], merge: Callable[[list[Any]], Any]) -> Any:
    """Merge delayed partials FAN_IN at a time until one is left."""
    step = delayed(merge)
    while len(partials) > 1:
        partials = [step(partials[i:i + FAN_IN]) for i in range(0, len(partials), FAN_IN)]
    return partials[0]


def aggregate_frame(priced: Any, *, by: Sequence[str] = (),
                    greeks: Sequence[str] | None = None) -> pa.Table:
    """Position-weighted value and Greeks per group of a priced frame
    (`price_frame`'s output), summed across partitions: the table of
    `gpu_pricer.book.Aggregator.result`.  Computes."""
    keys, names = tuple(by), None if greeks is None else tuple(greeks)
    partials = [delayed(_aggregate_partition)(p, keys, names) for p in priced.to_delayed()]
    if not partials:
        return book.Aggregator(keys, names).result()
    merged: book.Aggregator = _tree(partials, _merge_aggregates).compute()
    return merged.result()


def scenario_frame(frame: Any, scenarios: book.ScenarioGrid | str, *, model: str = "bsm",
                   by: Sequence[str] = (), backend: str = "auto",
                   dtype: str = "float64") -> pa.Table:
    """Each group's PnL under a scenario grid, summed across partitions: the
    table of `gpu_pricer.book.ScenarioPnL.result`.  Computes."""
    grid = book.parse_scenarios(scenarios) if isinstance(scenarios, str) else scenarios
    keys = tuple(by)
    partials = [delayed(_scenario_partition)(p, grid, model, keys, backend, dtype)
                for p in frame.to_delayed()]
    if not partials:
        return book.ScenarioPnL(grid, model=model, by=keys).result()
    merged: book.ScenarioPnL = _tree(partials, _merge_scenarios).compute()
    return merged.result()
