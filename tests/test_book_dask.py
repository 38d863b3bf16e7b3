"""gpu_pricer.dask on a dask LocalCluster (threads, one process): partitions
priced like the whole book, aggregates and scenario PnL merged across
partitions equal to the single-table results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from gpu_pricer import book as bk  # noqa: E402
from gpu_pricer import dask as gpd  # noqa: E402

from .test_book import GREEKS, make_table  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def frame(n: int, parts: int, seed: int) -> tuple[Any, Any]:
    table = make_table(n, seed=seed)
    return table, dd.from_pandas(table.to_pandas(), npartitions=parts)


def test_price_frame_partition_by_partition(client: Any) -> None:
    table, df = frame(4000, 5, seed=11)
    priced = gpd.price_frame(df, greeks=GREEKS, backend="numpy")
    assert list(priced.columns) == [*table.column_names, "price", *GREEKS, "error"]
    assert str(priced.dtypes["error"]) == "int8"
    got = priced.compute()
    ref = bk.price_book(table, greeks=GREEKS, backend="numpy").to_pandas()
    assert len(got) == table.num_rows
    assert list(got.index) == list(range(table.num_rows))  # order and index kept
    for name in ("price", *GREEKS, "error"):
        np.testing.assert_array_equal(got[name].to_numpy(), ref[name].to_numpy())
    assert (got["error"] != 0).sum() > 0


def test_aggregate_and_scenarios_across_partitions(client: Any) -> None:
    table, df = frame(6000, 20, seed=12)  # 20 partitions: two levels of merging
    priced = gpd.price_frame(df, greeks=GREEKS)  # auto: numba in the worker threads
    agg = gpd.aggregate_frame(priced, by=["desk", "underlying"])
    ref = bk.aggregate(bk.price_book(table, greeks=GREEKS), by=["desk", "underlying"])
    assert agg.column_names == ref.column_names
    for name in ("desk", "underlying", "rows", "errors"):  # pandas strings come back large
        assert agg.column(name).to_pylist() == ref.column(name).to_pylist()
    for name in ("value", *GREEKS):
        np.testing.assert_allclose(agg.column(name).to_numpy(), ref.column(name).to_numpy(),
                                   rtol=1e-11, atol=1e-9)
    spec = "spot=-10%:+10%:3,vol=-5:+5:3"
    pnl = gpd.scenario_frame(df, spec, by=["desk"], backend="numpy")
    want = bk.scenario_pnl(table, spec, by=["desk"], backend="numpy")
    assert pnl.column_names == want.column_names
    assert pnl.column("rows").equals(want.column("rows"))
    np.testing.assert_allclose(pnl.column("pnl").to_numpy(), want.column("pnl").to_numpy(),
                               rtol=1e-11, atol=1e-9)
    zero = pnl.filter(np.array([p == {"spot_pct": 0.0, "vol_points": 0.0} for p in
                                (dict(zip(("spot_pct", "vol_points"), x, strict=True)) for x in
                                 zip(pnl.column("spot_pct").to_pylist(),
                                     pnl.column("vol_points").to_pylist(), strict=True))]))
    assert zero.num_rows == 3 and all(v == 0.0 for v in zero.column("pnl").to_pylist())
