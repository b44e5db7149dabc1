"""Analysis benchmark: time and peak memory of each embedding-analysis step at ChestX-ray14 scale.

Planted data: 14 Gaussian clusters of unequal size and spread whose centres lie in a random
8-d subspace of 512-d, plus isotropic noise (embeddings are low-rank in practice), at each
size of `--sizes`. Every step runs in a fresh Python process (with its baseline), so its peak RSS
(`resource.getrusage(...).ru_maxrss`) is its own: `peak GB` is the whole process (Python,
libraries, input arrays), `+GB` what the step added on top of the loaded input. Each
clustering step reports the adjusted Rand index against the planted clusters.

Each ptxssl step is compared with the bare scikit-learn / umap-learn calls doing the same
work on the same data, in the same process, right after it: the same standardisation,
solver, inits, seeds and parameters (ratio = ptxssl time / baseline time, so it measures
ptxssl's overhead and nothing else):

    PCA 512->50     ptxssl.reduce                      vs  StandardScaler + PCA(50, randomized)
    GMM             ptxssl gmm, k=14                   vs  GaussianMixture(14, reg_covar, float64)
    GMM BIC         ptxssl gmm, k by BIC               vs  the same diag sweep + full fit, by hand
    k-means         ptxssl kmeans, k=14                vs  KMeans(14, n_init=3)
    DBSCAN eps      ptxssl eps_search for 14 clusters  vs  DBSCAN rerun from scratch at every
                    on PCA-10 (one shared radius           eps tried (one run timed, x eps tried):
                    graph)                                 the work the search saves
    DBSCAN knee     ptxssl dbscan, knee eps            vs  k-distances + DBSCAN at that eps
    HDBSCAN         ptxssl hdbscan                     vs  HDBSCAN(same min_cluster_size, min_samples)
    UMAP            ptxssl umap_2d (after a 5k-point   vs  umap.UMAP(random_state=0, low_memory=True)
                    warm-up fit that compiles numba,
                    timed apart)

Targets at 112k on 2 cores, <= 4 GB: PCA+GMM and k-means <= 60 s, DBSCAN/HDBSCAN on
PCA-reduced features <= 5 min, UMAP <= 5 min; every ratio <= 1.3. The full run (about an hour on 2 shared cores):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_analysis.py --sizes 10000,50000,112120

Quick check: `--sizes 10000`. `--steps pca,kmeans` runs a subset; `--no-baseline` skips the
comparison calls (the slow part at 112k).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = ("pca", "gmm", "gmm_bic", "kmeans", "dbscan_eps", "dbscan_knee", "hdbscan", "umap")
K, DIM = 14, 512


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 512) float32 embeddings of 14 planted clusters and their (n,) labels."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(DIM, 8)))[0]  # (512, 8) orthonormal
    centres = rng.normal(size=(K, 8)) * 10 @ basis.T  # (14, 512), closest pair ~13 apart
    truth = rng.choice(K, size=n, p=rng.dirichlet(np.full(K, 5.0)))
    spread = rng.uniform(0.7, 1.3, size=K)
    x = centres[truth] + rng.normal(size=(n, DIM)).astype(np.float32) * spread[truth, None]
    return x.astype(np.float32), truth


def _maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


REPEATS = {"pca": 2, "gmm": 2, "gmm_bic": 2, "kmeans": 2, "dbscan_knee": 2}  # the rest: minutes, once


def _step(name: str, folder: Path, baseline: bool) -> dict:
    """Run one step in this (fresh) process; return timings, memory and ARI. Quick steps run
    twice, alternating with their baseline, and keep each side's best time: whichever call
    runs first in a process is slower (allocations, caches), and neither side should pay it."""
    from sklearn.metrics import adjusted_rand_score

    from ptxssl.analysis import cluster as cl

    truth = np.load(folder / "truth.npy")
    source = {"pca": "x512", "umap": "x50", "dbscan_eps": "x10", "dbscan_knee": "x10", "hdbscan": "x10"}
    x = np.load(folder / f"{source.get(name, 'x50')}.npy")
    n, extra = len(x), {}
    before = _maxrss_gb()

    def ours() -> dict:
        if name == "pca":
            cl.reduce(x, 50, seed=0)
            return {}
        if name in ("gmm", "gmm_bic", "kmeans", "hdbscan", "dbscan_knee"):
            method = name.split("_")[0]
            cfg = cl.ClusterConfig(method=method, n_clusters=K if name in ("gmm", "kmeans") else None, seed=0)
            labels, out = cl.CLUSTERERS[method](x, cfg)
        elif name == "dbscan_eps":
            from ptxssl.analysis.dbscan import eps_search

            labels, out = eps_search(x, K, min_samples=2 * x.shape[1], seed=0)
        else:  # umap
            from ptxssl.analysis.plots import umap_2d

            umap_2d(x, seed=0)
            return {}
        extra["ari"] = adjusted_rand_score(truth, labels)
        return out

    if name == "umap":  # compile numba once, NN-descent included (used above 4,096 points)
        from ptxssl.analysis.plots import umap_2d

        t0 = time.perf_counter()
        umap_2d(x[:5000], seed=0)
        extra["compile_s"] = time.perf_counter() - t0
    times, base_times, out, base = [], [], {}, {}
    for _ in range(REPEATS.get(name, 1)):
        t0 = time.perf_counter()
        out = ours()
        times.append(time.perf_counter() - t0)
        if baseline:
            base = _baseline(name, x, out)
            base_times.append(base["baseline_s"])
    result = {"step": name, "n": n, "seconds": min(times), "peak_gb": _maxrss_gb(), "added_gb": _maxrss_gb() - before,
              "summary": {k: v for k, v in out.items() if k in ("n_clusters", "eps", "eps_tried", "graph_edges")},
              **extra}
    if baseline:
        result.update(base, baseline_s=min(base_times))
    return result


def _baseline(name: str, x: np.ndarray, out: dict) -> dict:
    """The bare library calls doing the same work on the same data (same standardisation, solver,
    inits, seeds and parameters), written as a user would: (label, seconds)."""
    from sklearn.cluster import DBSCAN, HDBSCAN, KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    from ptxssl.analysis.cluster import REG_COVAR, SAMPLE

    t0 = time.perf_counter()
    if name == "pca":
        label = "StandardScaler + PCA(50, randomized)"
        PCA(50, svd_solver="randomized", random_state=0).fit_transform(StandardScaler().fit_transform(x))
    elif name == "gmm":
        label = "GaussianMixture(14, full)"
        GaussianMixture(K, reg_covar=REG_COVAR, random_state=0).fit_predict(x.astype(np.float64))
    elif name == "gmm_bic":
        label = "GaussianMixture diag BIC sweep + full fit"
        sub = x[np.sort(np.random.default_rng(0).choice(len(x), size=min(4 * SAMPLE, len(x)), replace=False))]
        bic = {}
        for k in range(1, 21):  # ClusterConfig.max_clusters
            bic[k] = GaussianMixture(k, covariance_type="diag", reg_covar=REG_COVAR, random_state=0).fit(sub).bic(sub)
            if k - min(bic, key=bic.get) >= 3:
                break
        GaussianMixture(min(bic, key=bic.get), reg_covar=REG_COVAR, random_state=0).fit_predict(x.astype(np.float64))
    elif name == "kmeans":
        label = "KMeans(14, n_init=3)"
        KMeans(K, n_init=3, random_state=0).fit_predict(x)
    elif name in ("dbscan_eps", "dbscan_knee"):
        samples = 2 * x.shape[1]
        if name == "dbscan_knee":
            label = "k-distances + DBSCAN(knee eps)"
            NearestNeighbors(n_neighbors=samples).fit(x).kneighbors(x)
        DBSCAN(eps=out["eps"], min_samples=samples).fit(x)
        if name == "dbscan_eps":
            label = f"DBSCAN x {out['eps_tried']} eps"
            return {"baseline": label, "baseline_s": (time.perf_counter() - t0) * out["eps_tried"]}
    elif name == "hdbscan":
        label = f"HDBSCAN({out['min_cluster_size']}, min_samples {out['min_samples']})"
        HDBSCAN(min_cluster_size=out["min_cluster_size"], min_samples=out["min_samples"], copy=True).fit(x)
    elif name == "umap":
        import umap

        label = "umap.UMAP(random_state=0, low_memory=True)"
        umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0, low_memory=True).fit_transform(x)
    return {"baseline": label, "baseline_s": time.perf_counter() - t0}


def _prepare(n: int, folder: Path) -> None:
    """Write the planted data and its PCA-50 / PCA-10 views (the steps' inputs)."""
    from ptxssl.analysis.cluster import reduce

    x, truth = planted(n)
    np.save(folder / "x512.npy", x)
    np.save(folder / "truth.npy", truth)
    np.save(folder / "x50.npy", reduce(x, 50)[0])
    np.save(folder / "x10.npy", reduce(x, 10)[0])


def _row(r: dict) -> str:
    ratio = f"{r['seconds'] / r['baseline_s']:.2f}x" if r.get("baseline_s") else ""
    notes = ", ".join(f"{k}={v}" for k, v in r["summary"].items())
    if "compile_s" in r:
        notes = f"+{r['compile_s']:.0f} s warm-up (numba compile, 5k fit)" + (f", {notes}" if notes else "")
    ari = f"{r['ari']:.3f}" if "ari" in r else ""
    base = f"{r['baseline']} {r['baseline_s']:.1f} s" if r.get("baseline_s") else ""
    return (f"| {r['step']} | {r['n']} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | +{r['added_gb']:.2f} | "
            f"{ari} | {base} | {ratio} | {notes} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,112120", help="Comma-separated numbers of images.")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"Subset of {','.join(STEPS)}.")
    parser.add_argument("--no-baseline", action="store_true", help="Skip the plain-library comparison calls.")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_step(args.child[0], Path(args.child[1]), not args.no_baseline)))
        return
    steps = [s for s in args.steps.split(",") if s]
    bad = sorted(set(steps) - set(STEPS))
    if bad:
        parser.error(f"unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}")
    print("| step | N | ptxssl s | peak GB | +GB | ARI | baseline | ratio | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            _prepare(n, Path(tmp))
            for step in steps:
                cmd = [sys.executable, __file__, "--child", step, tmp] + (["--no-baseline"] if args.no_baseline else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(f"| {step} | {n} | failed: {done.stderr.strip().splitlines()[-1]} |||||||")
                    continue
                print(_row(json.loads(done.stdout.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
