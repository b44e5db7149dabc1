"""Plots: titled, labelled, legends capped, written atomically; one real (small) UMAP fit."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from ptxssl.analysis.plots import (
    MAX_CATEGORIES,
    histogram_figure,
    marker_style,
    save_figure,
    scatter_figure,
    top_categories,
    umap_2d,
)
from tests.analysis.planted import blobs


def test_scatter_figure_has_titles_labels_and_a_capped_legend(tmp_path):
    pyplot_figures = plt.get_fignums()
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(3000, 2))
    many = np.array([f"c{i}" for i in rng.integers(0, 30, 3000)])  # 30 categories
    fig = scatter_figure(xy, [("clusters", many), ("anomaly", np.where(xy[:, 0] > 2, "flipped", "normal"))],
                         "UMAP of test")
    left, right = fig.axes
    assert fig._suptitle.get_text() == "UMAP of test"
    assert left.get_title() == "clusters" and right.get_title() == "anomaly"
    assert left.get_xlabel() == "UMAP 1" and left.get_ylabel() == "UMAP 2"
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert len(legend) == MAX_CATEGORIES and legend[-1].startswith("other (")
    assert [t.get_text().split(" (")[0] for t in right.get_legend().get_texts()] == ["flipped", "normal"]
    assert left.collections[0].get_rasterized() and len(left.collections[0].get_offsets()) == 3000
    path = save_figure(fig, tmp_path / "u.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and sorted(p.name for p in tmp_path.iterdir()) == ["u.png"]
    # never registered with pyplot (a bare Figure): 100 figures in a loop do not pile up, and no backend is chosen
    assert plt.get_fignums() == pyplot_figures


def test_markers_shrink_and_fade_with_more_points():
    small, big = marker_style(500), marker_style(112_000)
    assert big["s"] < small["s"] and big["alpha"] < small["alpha"] and big["alpha"] >= 0.1


def test_top_categories_folds_only_the_rare_ones():
    cats = np.array(["a"] * 50 + ["b"] * 30 + [f"r{i}" for i in range(20)])
    folded = top_categories(cats, limit=5)
    assert (folded == "a").sum() == 50 and (folded == "other").sum() == 18 and len(set(folded)) == 5
    few = np.array(["x", "y", "x"])
    assert top_categories(few).tolist() == ["x", "y", "x"]


def test_histogram_has_threshold_line_title_and_labels():
    rng = np.random.default_rng(0)
    normal = np.append(rng.normal(size=500), 1e6)  # one extreme normal image: clipped into the edge bin
    fig = histogram_figure({"normal": normal, "flipped": rng.normal(5, 1, 30), "inverted": np.array([40.0])},
                           "gmm anomaly scores", "score", threshold=2.0)
    ax = fig.axes[0]
    assert ax.get_title() == "gmm anomaly scores" and ax.get_xlabel() == "score" and ax.get_ylabel() == "density"
    assert 40 <= ax.get_xlim()[1] < 100  # the 1e6 did not stretch the axis; the lone anomaly kind still shows
    assert any(line.get_xdata()[0] == 2.0 for line in ax.get_lines())
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "threshold 2"


def test_umap_separates_planted_clusters_and_samples_rows():
    """The one real UMAP fit of the suite (numba compiles once, ~15 s)."""
    x, truth = blobs(300, k=3, dim=16, sep=10)
    xy, rows = umap_2d(x, seed=0, sample=200)
    assert xy.shape == (200, 2) and len(set(rows)) == 200 and (np.diff(rows) > 0).all()
    found = KMeans(3, n_init=3, random_state=0).fit_predict(xy)
    assert adjusted_rand_score(truth[rows], found) >= 0.95
