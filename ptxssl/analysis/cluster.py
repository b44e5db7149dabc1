"""`ptxssl cluster`: embeddings -> standardise -> PCA -> clusters -> pseudo-labels.

Each clusterer is one function in the `CLUSTERERS` registry, called on the PCA-reduced
features; it returns (N,) integer labels (-1 = noise) and a summary of what it chose.
DBSCAN's eps is chosen in dbscan.py: from the k-distance knee, or by a search for a
requested cluster count.

Standardising first stops a few high-variance channels from owning every distance; PCA
then makes GMM covariances and neighbour searches affordable at 112k images (512 -> 50-d for
GMM / k-means, -> 10-d for the density methods, whose neighbour searches degrade fastest
with dimension).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from ptxssl.analysis.dbscan import dbscan
from ptxssl.analysis.store import Embeddings, read_embeddings
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_json

DEFAULT_PCA = {"gmm": 50, "kmeans": 50, "dbscan": 10, "hdbscan": 10}
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
SAMPLE = 5000  # points for silhouette scores and model-selection curves
REG_COVAR = 1e-4  # added to GMM covariance diagonals: small against the unit variances of standardised features
_SKLEARN = tuple(int(p) for p in sklearn.__version__.split(".")[:2])  # covariance_eigh PCA: >= 1.5


@dataclass
class ClusterConfig:
    """Every choice of one clustering; saved in metrics.json so a run can be repeated."""

    method: str = "gmm"
    pca: int | float | None = None  # components, explained-variance fraction, 0 = off; None = method default
    n_clusters: int | None = None  # None: BIC (gmm), silhouette (kmeans), k-distance knee (dbscan)
    min_samples: int | None = None  # dbscan / hdbscan; None = 2 x dimension
    min_cluster_size: int | None = None  # hdbscan; None = max(10, N // 500)
    covariance_type: str = "full"  # gmm
    max_clusters: int = 20  # upper end of the gmm / kmeans model-selection range
    seed: int = 0


def parse_pca(value: str | float | int | None, option: str = "--pca") -> int | float | None:
    """`--pca`: an int >= 1 (components), a float in (0, 1) (explained variance), 0 (off);
    None stays None (the method's default)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number == 0:
        return 0
    if 0 < number < 1:
        return number
    if number >= 1 and number.is_integer():
        return int(number)
    raise UserError(f"{option} {value!r}: give a number of components (50), a fraction of variance "
                    "(0.95), or 0 for no PCA")


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)) if n > size else np.arange(n)


def reduce(features: np.ndarray, pca: int | float | None, seed: int = 0,
           fit_rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Standardise (N, D) features, then PCA them: (N, d) float32 and what was kept.

    An int keeps that many components (randomized SVD, seconds at 112k x 512); a fraction
    keeps as many as explain it (exact eigendecomposition of the D x D covariance, also fast
    when N >> D). The scaler and PCA are fitted on `fit_rows` (default: all rows), e.g. an
    anomaly reference set, and applied to every row.
    """
    scaler = StandardScaler()
    if fit_rows is None:  # fit_transform: one pass fewer over 112k x 512 than fit, then transform
        x = scaler.fit_transform(features).astype(np.float32, copy=False)  # (N, D)
        n_fit = len(x)
    else:
        fit = features[fit_rows]  # a bool mask or row indices
        x, n_fit = scaler.fit(fit).transform(features).astype(np.float32, copy=False), len(fit)
    if not pca or (isinstance(pca, int) and pca >= min(n_fit, x.shape[1])):
        return x, {"components": x.shape[1], "explained_variance": 1.0}
    solver = "randomized" if isinstance(pca, int) else ("covariance_eigh" if _SKLEARN >= (1, 5) else "full")
    model = PCA(n_components=pca, svd_solver=solver, random_state=seed)
    if fit_rows is None:
        reduced = model.fit_transform(x)
    else:
        reduced = model.fit(x[fit_rows]).transform(x)
    reduced = reduced.astype(np.float32, copy=False)  # (N, d)
    return reduced, {"components": int(model.n_components_),
                     "explained_variance": round(float(model.explained_variance_ratio_.sum()), 4)}


def _gmm(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, dict]:
    """Gaussian mixture with `covariance_type` covariances.

    Without `n_clusters`, the count is the one with the lowest BIC (Schwarz 1978) among
    diagonal-covariance mixtures fitted to a 20,000-point sample, sweeping k upwards until
    BIC has not improved for 3 steps. Diagonal, whatever the final covariance: a full
    covariance in 50-d carries 1,275 parameters, and BIC then prefers too few clusters
    unless there are hundreds of thousands of images (measured on 10k planted points of 14
    clusters: full-covariance BIC chose 8, diagonal 14).
    """
    if cfg.covariance_type not in COVARIANCE_TYPES:
        raise UserError(f"--covariance-type {cfg.covariance_type!r}: choose from {', '.join(COVARIANCE_TYPES)}")
    k, summary = cfg.n_clusters, {}
    if k is None:
        sub = x[_sample(len(x), 4 * SAMPLE, cfg.seed)]
        bic: dict[int, float] = {}
        for k in range(1, min(cfg.max_clusters, len(sub) - 1) + 1):
            bic[k] = float(GaussianMixture(k, covariance_type="diag", reg_covar=REG_COVAR,
                                           random_state=cfg.seed).fit(sub).bic(sub))
            if k - min(bic, key=bic.get) >= 3:
                break
        k = min(bic, key=bic.get)
        summary["bic_diag"] = {str(c): round(b, 1) for c, b in bic.items()}
    model = GaussianMixture(k, covariance_type=cfg.covariance_type, reg_covar=REG_COVAR, random_state=cfg.seed)
    try:
        labels = model.fit_predict(x.astype(np.float64))
    except ValueError as e:  # collapsed components: too few images for the covariances asked for
        raise UserError(f"gmm with {k} {cfg.covariance_type}-covariance components in {x.shape[1]}-d failed on "
                        f"{len(x)} images ({str(e).split('.')[0]}); use fewer --pca components, "
                        "--covariance-type diag, or fewer --n-clusters") from None
    return labels, {"n_clusters": k, "converged": bool(model.converged_), **summary}


def _kmeans(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, dict]:
    """k-means (Lloyd, k-means++ seeding, best of 3); without `n_clusters`, the count with
    the best silhouette on a sample."""
    make = lambda k: KMeans(k, n_init=3, random_state=cfg.seed)  # noqa: E731
    if cfg.n_clusters is not None:
        return make(cfg.n_clusters).fit_predict(x), {"n_clusters": cfg.n_clusters}
    sub = _sample(len(x), SAMPLE, cfg.seed)
    fits = {k: make(k).fit(x) for k in range(2, min(cfg.max_clusters, len(x) - 1) + 1)}
    scores = {k: float(silhouette_score(x[sub], m.labels_[sub])) for k, m in fits.items()}
    k = max(scores, key=scores.get)
    return fits[k].labels_, {"n_clusters": k, "silhouette_by_k": {str(c): round(s, 4) for c, s in scores.items()}}


def _hdbscan(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, dict]:
    """HDBSCAN (Campello et al. 2013): chooses the number of clusters itself."""
    if cfg.n_clusters is not None:
        raise UserError("--n-clusters does not apply to hdbscan (it chooses the count); "
                        "tune --min-cluster-size, or use dbscan/gmm/kmeans")
    size = cfg.min_cluster_size or max(10, len(x) // 500)
    samples = cfg.min_samples or 2 * x.shape[1]
    labels = HDBSCAN(min_cluster_size=size, min_samples=samples, copy=True).fit_predict(x)
    return labels, {"min_cluster_size": size, "min_samples": samples, "n_clusters": len(set(labels.tolist()) - {-1})}


def _dbscan(x: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, dict]:
    """DBSCAN, eps from the k-distance knee or searched for `n_clusters` (see dbscan.py)."""
    return dbscan(x, cfg.min_samples or 2 * x.shape[1], cfg.n_clusters, seed=cfg.seed)


CLUSTERERS: dict[str, Callable[[np.ndarray, ClusterConfig], tuple[np.ndarray, dict]]] = {
    "dbscan": _dbscan, "gmm": _gmm, "kmeans": _kmeans, "hdbscan": _hdbscan}


def get_clusterer(name: str) -> Callable[[np.ndarray, ClusterConfig], tuple[np.ndarray, dict]]:
    if name not in CLUSTERERS:
        raise UserError(f"unknown clustering method {name!r}; choose from {', '.join(CLUSTERERS)}")
    return CLUSTERERS[name]


def cluster(features: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cluster (N, D) features: (N,) labels (-1 = noise), the (N, d) reduced features the
    clusterer saw, and a summary of what it chose."""
    fit = get_clusterer(cfg.method)
    pca = DEFAULT_PCA[cfg.method] if cfg.pca is None else cfg.pca
    for option, value in (("--n-clusters", cfg.n_clusters), ("--min-samples", cfg.min_samples),
                          ("--min-cluster-size", cfg.min_cluster_size)):
        if value is not None and not (1 <= value <= len(features)):
            raise UserError(f"{option} {value}: must be between 1 and the number of images ({len(features)})")
    x, reduction = reduce(features, pca, cfg.seed)
    labels, summary = fit(x, cfg)
    return np.asarray(labels, np.int64), x, {"method": cfg.method, "pca": reduction, **summary}


def cluster_metrics(labels: np.ndarray, x: np.ndarray, emb: Embeddings, seed: int = 0) -> dict:
    """Sizes, noise, silhouette and agreement of clusters with every label of `emb`.

    Silhouette uses a seeded sample of at most 5,000 non-noise points (it is O(n^2)).
    Agreement (NMI, ARI, purity) is computed per label on the images that are neither noise
    nor unknown for that label; `purity_baseline` is the share of the largest class, which
    is what purity would be with one cluster (a rare finding has purity near 1 for any
    clustering). Multi-label findings are compared column by column (finding vs not) and as
    the single `finding` category (see `Embeddings.categories`).
    """
    noise = labels == -1
    ids, counts = np.unique(labels, return_counts=True)
    sizes = {str(int(k)): int(v) for k, v in sorted(zip(ids, counts), key=lambda kv: -kv[1]) if k != -1}
    sub = np.flatnonzero(~noise)
    sub = sub[_sample(len(sub), SAMPLE, seed)]
    silhouette = None
    if 2 <= len(np.unique(labels[sub])) < len(sub):
        silhouette = round(float(silhouette_score(x[sub], labels[sub])), 4)
    agreement = {}
    for name in emb.label_choices():
        if name == "split":
            continue
        cats = emb.categories(name)
        use = ~noise & (cats != "unknown")
        if use.sum() < 2:
            continue
        table = contingency_matrix(cats[use], labels[use])  # (classes, clusters)
        agreement[name] = {
            "nmi": round(float(normalized_mutual_info_score(cats[use], labels[use])), 4),
            "ari": round(float(adjusted_rand_score(cats[use], labels[use])), 4),
            "purity": round(float(table.max(axis=0).sum() / table.sum()), 4),
            "purity_baseline": round(float(table.sum(axis=1).max() / table.sum()), 4),
            "images": int(use.sum())}
    return {"images": int(len(labels)), "n_clusters": len(sizes), "noise_fraction": round(float(noise.mean()), 4),
            "sizes": sizes, "silhouette": silhouette, "agreement": agreement}


def run_cluster(emb_path: str | Path, out_dir: str | Path, method: str = "gmm", *, pca: int | float | None = None,
                n_clusters: int | None = None, min_samples: int | None = None, min_cluster_size: int | None = None,
                covariance_type: str = "full", features: str = "embeddings", color_by: str | None = None,
                seed: int = 0, umap: bool = True, umap_sample: int | None = None) -> dict:
    """Cluster an embeddings file and write `labels.csv`, `metrics.json` and `umap.png`.

    `labels.csv` (image_id,label; -1 = noise) is what `ptxssl pretrain --method pseudo
    --labels` reads. The UMAP is fitted on the same reduced features the clusterer saw;
    its second panel is coloured by `color_by` (default: the anomaly labels, else the first
    label). Returns metrics.json's content plus the paths written.
    """
    get_clusterer(method)
    pca = DEFAULT_PCA[method] if pca is None else parse_pca(pca)
    cfg = ClusterConfig(method=method, pca=pca, n_clusters=n_clusters, min_samples=min_samples,
                        min_cluster_size=min_cluster_size, covariance_type=covariance_type, seed=seed)
    emb = read_embeddings(emb_path, features=features)
    color_by = emb.check_label(color_by) if color_by else emb.default_label(allow_split=False)
    labels, x, summary = cluster(emb.features, cfg)
    out = Path(out_dir)
    with atomic_path(out / "labels.csv") as tmp:
        pd.DataFrame({"image_id": emb.ids, "label": labels}).to_csv(tmp, index=False)
    metrics = {**cluster_metrics(labels, x, emb, seed), "fit": summary,
               "config": {**asdict(cfg), "embeddings": str(emb_path), "features": features}}
    paths = {"labels": out / "labels.csv", "metrics": out / "metrics.json"}
    if umap:
        from ptxssl.analysis.plots import save_figure, scatter_figure, umap_2d

        xy, rows = umap_2d(x, seed=seed, sample=umap_sample)
        names = np.where(labels[rows] == -1, "noise", labels[rows].astype(str))
        panels = [(f"{method} clusters", names)]
        if color_by:
            panels.append((color_by, emb.categories(color_by)[rows]))
        title = f"UMAP of {Path(emb_path).name} ({len(rows)} images, {summary['pca']['components']}-d input)"
        paths["umap"] = save_figure(scatter_figure(xy, panels, title, seed=seed), out / "umap.png")
    write_json(out / "metrics.json", metrics)
    return {**metrics, "paths": {k: str(v) for k, v in paths.items()}}
