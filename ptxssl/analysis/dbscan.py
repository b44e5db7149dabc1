"""DBSCAN (Ester et al. 1996) with eps chosen for the user: from the k-distance knee, or by a
search that hits a requested number of clusters.

A DBSCAN run at one eps on 112k points spends nearly all its time in the radius-neighbour
search (~37 s in 10-d here), so a search that reran it for each of ~30 eps would take
twenty minutes. Instead the neighbours are found once, as a sparse radius graph at the
largest eps the search needs, and each trial keeps the graph's edges <= eps and hands it
to `DBSCAN(metric="precomputed")`. The graph is exact for every smaller eps, unlike a
k-nearest-neighbour graph, which would drop edges in dense regions.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.cluster import DBSCAN
from sklearn.neighbors import KDTree, NearestNeighbors

MAX_EDGES = 20_000_000  # ~1.5 GB peak with DBSCAN's own copies of the graph


def kdist(x: np.ndarray, min_samples: int) -> np.ndarray:
    """(N,) distance to the min_samples-th neighbour, the point itself counted first (as
    DBSCAN counts it): a point is core exactly when eps >= this distance."""
    dist, _ = NearestNeighbors(n_neighbors=min(min_samples, len(x))).fit(x).kneighbors(x)
    return dist[:, -1]


def knee_eps(distances: np.ndarray) -> float:
    """The knee of the sorted k-distance curve: the point farthest below the chord from its
    first to its last value, with both axes scaled to [0, 1]."""
    y = np.sort(distances)
    scaled = (y - y[0]) / max(y[-1] - y[0], 1e-12)
    return float(y[np.argmax(np.linspace(0, 1, len(y)) - scaled)])


def _threshold(graph: csr_matrix, eps: float) -> csr_matrix:
    """The edges of `graph` (rows sorted by distance) that are <= eps, as a new graph."""
    keep = graph.data <= eps
    indptr = np.concatenate([[0], np.cumsum(keep)])[graph.indptr]
    return csr_matrix((graph.data[keep], graph.indices[keep], indptr), shape=graph.shape)


def _edge_cap(x: np.ndarray, eps: float, max_edges: int, seed: int) -> float:
    """`eps`, lowered until its radius graph would hold about `max_edges` edges (estimated
    from neighbour counts of 2,000 points: counted by the tree, never listed)."""
    sample = x[np.random.default_rng(seed).permutation(len(x))[:2000]]
    tree = KDTree(x)
    edges = lambda e: tree.query_radius(sample, e, count_only=True).mean() * len(x)  # noqa: E731
    if edges(eps) <= max_edges:
        return eps
    lo, hi = 0.0, eps
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if edges(mid) <= max_edges else (lo, mid)
    return lo


def _find(count: Callable[[float], int], grid: np.ndarray, target: int) -> tuple[float | None, float]:
    """An eps with `count(eps) == target` (None if the grid neither hits nor brackets the
    target), searched over `grid` then by bisection; and the eps of the grid's peak count.

    Only the grid from the peak count upwards is searched. Below the peak, the count rises
    with eps only because more points become core: a clustering there is mostly noise.
    """
    counts = [count(e) for e in grid]
    peak = int(np.argmax(counts))
    top, grid, counts = float(grid[peak]), grid[peak:], counts[peak:]
    hits = [i for i, c in enumerate(counts) if c == target]
    if hits:  # the largest eps that still gives the count: the fewest noise points
        if hits[-1] + 1 == len(grid):
            return float(grid[-1]), top
        lo, hi = grid[hits[-1]], grid[hits[-1] + 1]
        for _ in range(10):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if count(mid) == target else (lo, mid)
        return float(lo), top
    cross = [i for i in range(len(grid) - 1) if (counts[i] - target) * (counts[i + 1] - target) < 0]
    if not cross:
        return None, top
    lo, hi = grid[cross[-1]], grid[cross[-1] + 1]
    below = counts[cross[-1]] < target
    for _ in range(30):
        mid = (lo + hi) / 2
        c = count(mid)
        if c == target:
            return float(mid), top
        lo, hi = (mid, hi) if (c < target) == below else (lo, mid)
    return None, top


def eps_search(x: np.ndarray, n_clusters: int, min_samples: int, max_edges: int = MAX_EDGES,
               seed: int = 0) -> tuple[np.ndarray, dict]:
    """DBSCAN at an eps giving `n_clusters` clusters (the largest such eps: fewest noise).

    Stage 1 builds the radius graph at the 99th percentile of the k-distances (99 % of the
    points are core there) and searches eps up to it: enough unless clusters must merge.
    Only if every eps there still gives too many clusters does stage 2 build one graph at
    the largest eps whose graph fits `max_edges`, and search above stage 1. Each stage: a
    16-point log grid, then bisection on the bracket (see `_find`).

    Returns:
        (N,) labels (-1 = noise) and a summary; when no eps gives the count, the labels of
        the closest count and a `note` saying so.
    """
    distances = kdist(x, min_samples)
    floor = max(float(distances.min()), 1e-6)
    tried: dict[float, np.ndarray] = {}
    edges = 0
    ceilings = [_edge_cap(x, max(float(np.percentile(distances, 99)), floor * 1.01), max_edges, seed)]
    start = peak = floor
    for stage in range(2):
        graph = NearestNeighbors(radius=ceilings[-1]).fit(x).radius_neighbors_graph(
            x, mode="distance", sort_results=True)  # (N, N) sparse, the diagonal stored as 0
        edges = max(edges, graph.nnz)

        def count(eps: float, graph=graph) -> int:
            if eps not in tried:
                tried[eps] = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(
                    _threshold(graph, eps))
            return len(set(tried[eps].tolist()) - {-1})

        best, top = _find(count, np.geomspace(start, ceilings[-1], 16), n_clusters)
        if stage == 0:
            peak = top  # clusterings below stage 1's peak count are mostly noise
        if best is not None or stage == 1 or count(ceilings[-1]) < n_clusters:  # (cached: the grid's end)
            break  # found, or larger eps only merges further
        del graph
        diameter = 2 * float(np.linalg.norm(x - x.mean(0), axis=1).max())
        ceilings.append(_edge_cap(x, diameter, max_edges, seed))
        if ceilings[-1] <= ceilings[0] * 1.01:
            break  # the memory cap allows no larger eps
        start = ceilings[0]
    found = {e: len(set(v.tolist()) - {-1}) for e, v in tried.items() if e >= peak or e == best}
    if best is None:  # unreachable: the closest count above the peak, at the largest eps
        best = max(found, key=lambda e: (-abs(found[e] - n_clusters), e))
    summary = {"eps": round(float(best), 6), "n_clusters": found[best], "graph_edges": int(edges),
               "eps_tried": len(tried)}
    if found[best] != n_clusters:
        summary["note"] = (f"no eps gives {n_clusters} clusters with min_samples={min_samples} (searched eps "
                           f"up to {ceilings[-1]:.4g}); closest: {found[best]}, with "
                           f"{(tried[best] == -1).mean():.0%} noise")
    return tried[best], summary


def dbscan(x: np.ndarray, min_samples: int, n_clusters: int | None = None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """DBSCAN with eps from the k-distance knee, or searched to give `n_clusters`."""
    if n_clusters is not None:
        labels, summary = eps_search(x, n_clusters, min_samples, seed=seed)
        return labels, {"min_samples": min_samples, **summary}
    eps = knee_eps(kdist(x, min_samples))
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(x)
    return labels, {"eps": round(eps, 6), "eps_from": "k-distance knee", "min_samples": min_samples,
                    "n_clusters": len(set(labels.tolist()) - {-1})}
