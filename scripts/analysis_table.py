"""Analysis table: does a short AE pretraining help anomaly detection and clustering?

Makes a synthetic ChestX-ray14-format cache (with its QC anomalies: flipped, rotated and
inverted films), pretrains an autoencoder briefly, embeds every image with it and with a
random-init encoder (BatchNorm re-estimated on the train images like the AE's, and at init,
labelled), then for each encoder scores anomalies (GMM and kNN on the pooled
features, and the AE's reconstruction error) against the QC labels, and clusters (PCA + GMM,
14 clusters like the original study) with NMI against the synthetic findings:

    python scripts/analysis_table.py --work /tmp/ptx-analysis --count 1600 --size 64 --steps 300

Prints two Markdown tables (the README's analysis tables come from this script). Finished
stages in --work are reused.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ptxssl.analysis.anomaly import run_anomaly
from ptxssl.analysis.cluster import run_cluster
from ptxssl.analysis.embed import embed_cache
from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from ptxssl.pretrain.run import pretrain, resolve_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--count", type=int, default=1600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--clusters", type=int, default=14)
    args = ap.parse_args()
    work, t0 = args.work, time.perf_counter()
    cache = work / "nih.h5"
    if not cache.exists():
        synthesize(work, count=args.count, size=args.size, formats=("chestxray14",), seed=0, workers=2,
                   progress=False)
        prepare(work / "chestxray14", "chestxray14", cache, size=args.size, workers=2, progress=False)
    run = work / "ae"
    if not (run / "encoder.safetensors").is_file():
        cfg, mcfg = resolve_config("ae", None, {"data": str(cache), "out": str(run), "max_steps": args.steps,
                                               "epochs": 10_000, "batch_size": 32, "probe": False, "workers": 2})
        pretrain(cfg, mcfg, overwrite=True, progress=False)
    anomaly_rows, cluster_rows = [], []
    # every encoder read with BatchNorm statistics of the train images (embed's default), and
    # random init also with its BatchNorm at init (the identity), labelled, as `ptxssl probe` shows it
    rows = (("random init", "random", "random", "precise"), ("random init, BN at init", "random-bn-at-init", "random",
            "as-is"), (f"ae ({args.steps} steps)", "ae", str(run), "precise"))
    for name, slug, encoder, bn in rows:
        emb = work / f"{slug}.h5"
        if not emb.is_file():
            embed_cache(encoder, cache, emb, progress=False, bn=bn)
        methods = ("gmm", "knn", "recon") if slug == "ae" else ("gmm", "knn")
        for method in methods:
            m = run_anomaly(emb, work / "anomaly" / f"{slug}-{method}", method)["labels"]
            kinds = " / ".join(f"{m['per_kind'][k]['auroc']:.3f}" for k in ("flipped", "rotated", "inverted"))
            anomaly_rows.append(f"| {name} | {method} | {m['auroc']:.3f} | {m['average_precision']:.3f} | {kinds} |")
        c = run_cluster(emb, work / "cluster" / slug, "gmm", pca=0.9, n_clusters=args.clusters, umap=False)
        findings = {k: v for k, v in c["agreement"].items() if k not in ("anomaly", "finding")}
        nmi = np.mean([v["nmi"] for v in findings.values()])
        best = max(findings, key=lambda k: findings[k]["nmi"])
        agree = c["agreement"]
        cluster_rows.append(f"| {name} | {c['n_clusters']} | {nmi:.3f} | {best} {findings[best]['nmi']:.3f} | "
                            f"{agree['finding']['nmi']:.3f} | {agree['anomaly']['nmi']:.3f} |")
    print(f"\n{args.count} synthetic ChestX-ray14 images at {args.size} px; "
          f"{time.perf_counter() - t0:.0f} s in all\n")
    print("| encoder | anomaly score | AUROC | average precision | AUROC flipped / rotated / inverted |")
    print("|---|---|---|---|---|")
    print("\n".join(anomaly_rows))
    print("\n| encoder | clusters | mean NMI over the 14 findings | best finding (NMI) | NMI vs finding category "
          "| NMI vs QC anomaly |")
    print("|---|---|---|---|---|---|")
    print("\n".join(cluster_rows))


if __name__ == "__main__":
    main()
