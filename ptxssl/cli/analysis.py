"""Analysis commands: `embed` writes an embeddings file; `cluster`, `anomaly` and `umap` read it."""
from __future__ import annotations

from pathlib import Path

import click

from ptxssl.analysis.anomaly import SCORERS
from ptxssl.analysis.cluster import CLUSTERERS, COVARIANCE_TYPES, DEFAULT_PCA
from ptxssl.analysis.probe import PROBE_FEATURES
from ptxssl.analysis.store import FEATURES
from ptxssl.cli.common import cli, echo_config
from ptxssl.encoders.protocol import BN_PROTOCOLS, DEFAULT_BN
from ptxssl.engine.device import DEVICE_HELP, PRECISION_HELP, PRECISIONS

_EMB = click.Path(dir_okay=False, path_type=Path)
_PCA_HELP = "PCA after standardising: components (50), explained-variance fraction (0.95), or 0 for none."


def _features_option(fn):
    return click.option("--features", default="embeddings", type=click.Choice(FEATURES),
                        help="Which matrix of the file to use (latent: the AE latent / VAE mu; grid: 2x2 cells of the "
                             "deepest map, from `embed --grid`, which keep left from right).")(fn)


@cli.command()
@click.option("--encoder", required=True,
              help="random | imagenet | imagenet:FILE | an encoder.safetensors | a `ptxssl pretrain` run "
                   "folder (AE/VAE runs add the latent and the reconstruction error).")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Cache file written by `ptxssl prepare`.")
@click.option("--arch", default=None, show_default=False,
              help="Encoder architecture (an smp encoder name) for random / imagenet [default: resnet34; an "
                   "encoder file or run brings its own].")
@click.option("--out", required=True, type=_EMB, help="Embeddings file to write (.h5).")
@click.option("--batch-size", default=64, help="Images per forward pass.")
@click.option("--workers", default=0, help="DataLoader worker processes.")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--precision", default="auto", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
@click.option("--bn", default=DEFAULT_BN, type=click.Choice(BN_PROTOCOLS),
              help="BatchNorm statistics: precise re-estimates them on the --bn-reference images (the same "
                   "protocol for every encoder, random init included), as-is keeps the encoder's own.")
@click.option("--bn-reference", default="train", help="Split whose images --bn precise uses (all images if "
                                                      "the cache has none).")
@click.option("--grid", "with_grid", is_flag=True,
              help="Also write 2x2 grid features (4x the pooled size), which keep left from right: "
                   "`--features grid` in cluster / anomaly.")
@click.option("--mirror", "with_mirror", is_flag=True,
              help="Also write the features of each image's left-right mirror (and of its grid with --grid): what "
                   "`anomaly --method mirror` compares each film with, to find flipped ones (2x the time).")
@click.option("--seed", default=0, help="Seed of random-init weights: the same seed, the same random encoder (as "
                                        "`ptxssl probe --seed`).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def embed(encoder: str, data: Path, arch: str | None, out: Path, batch_size: int, workers: int, device: str,
          precision: str, bn: str, bn_reference: str, with_grid: bool, with_mirror: bool, seed: int,
          overwrite: bool) -> None:
    """Embed every image of a cache: pooled encoder features (512-d for resnet34), ids, splits, labels.

    The output is what cluster, anomaly and umap read.
    """
    from ptxssl.analysis.embed import describe, embed_cache
    from ptxssl.errors import UserError

    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    echo_config("embed", {"encoder": encoder, "arch": arch or "auto", "data": data, "out": out,
                          "batch_size": batch_size, "workers": workers, "device": device,
                          "precision": precision, "bn": bn, "bn_reference": bn_reference, "seed": seed})
    emb = embed_cache(encoder, data, out, batch_size=batch_size, workers=workers, device=device, arch=arch,
                      bn=bn, bn_reference=bn_reference, with_grid=with_grid, precision=precision,
                      with_mirror=with_mirror, seed=seed)
    click.echo(f"wrote {out}: {describe(emb)}")


@cli.command()
@click.argument("embeddings", type=_EMB)
@click.option("--method", default="gmm", type=click.Choice(list(CLUSTERERS)), help="Clustering algorithm.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for labels.csv, metrics.json, umap.png.")
@click.option("--pca", default=None, show_default=False,
              help=f"{_PCA_HELP} [default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_PCA.items()) + "]")
@click.option("--n-clusters", type=click.IntRange(min=1), default=None, show_default=False,
              help="Clusters wanted (dbscan: eps is searched to give it). Default: BIC (gmm), "
                   "silhouette (kmeans), k-distance knee (dbscan).")
@click.option("--min-samples", type=click.IntRange(min=1), default=None, show_default=False,
              help="dbscan/hdbscan neighbours for a core point [default: 2 x PCA dimension].")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=None, show_default=False,
              help="hdbscan smallest cluster [default: max(10, N/500)].")
@click.option("--covariance-type", default="full", type=click.Choice(COVARIANCE_TYPES), help="gmm covariances.")
@_features_option
@click.option("--color-by", default=None, show_default=False,
              help="Label for the UMAP's second panel [default: anomaly, else the first label].")
@click.option("--umap/--no-umap", "with_umap", default=True, help="Draw umap.png (slow at 100k images).")
@click.option("--umap-sample", type=click.IntRange(min=10), default=None, show_default=False,
              help="Draw the UMAP from this many images only.")
@click.option("--seed", default=0, help="Random seed.")
def cluster(embeddings: Path, method: str, out: Path, pca: str | None, n_clusters: int | None,
            min_samples: int | None, min_cluster_size: int | None, covariance_type: str, features: str,
            color_by: str | None, with_umap: bool, umap_sample: int | None, seed: int) -> None:
    """Cluster EMBEDDINGS into pseudo-labels: standardise -> PCA -> cluster.

    Writes OUT/labels.csv (image_id,label; -1 = noise) for `ptxssl pretrain --method pseudo
    --labels`, OUT/metrics.json (sizes, silhouette, agreement with every label) and
    OUT/umap.png.
    """
    from ptxssl.analysis.cluster import parse_pca, run_cluster

    pca_value = DEFAULT_PCA[method] if pca is None else parse_pca(pca)
    echo_config("cluster", dict(embeddings=embeddings, method=method, out=out, pca=pca_value, n_clusters=n_clusters,
                                min_samples=min_samples, min_cluster_size=min_cluster_size,
                                covariance_type=covariance_type, features=features, color_by=color_by,
                                umap=with_umap, umap_sample=umap_sample, seed=seed))
    result = run_cluster(embeddings, out, method, pca=pca_value, n_clusters=n_clusters, min_samples=min_samples,
                         min_cluster_size=min_cluster_size, covariance_type=covariance_type, features=features,
                         color_by=color_by, seed=seed, umap=with_umap, umap_sample=umap_sample)
    fit = result["fit"]
    chosen = ", ".join(f"{k}={fit[k]}" for k in ("eps", "min_samples", "min_cluster_size") if k in fit)
    click.echo(f"{result['n_clusters']} clusters of {result['images']} images ({fit['pca']['components']}-d input"
               + (f"; {chosen}" if chosen else "") + f"), noise {result['noise_fraction']:.1%}, "
               f"silhouette {result['silhouette']}")
    if "note" in fit:
        click.echo(f"  note: {fit['note']}")
    for name, a in result["agreement"].items():
        click.echo(f"  vs {name:<24} NMI {a['nmi']:.3f}  ARI {a['ari']:.3f}  purity {a['purity']:.3f} "
                   f"(one cluster: {a['purity_baseline']:.3f})")
    click.echo("wrote " + ", ".join(result["paths"].values()))


@cli.command()
@click.argument("embeddings", type=_EMB)
@click.option("--method", default="gmm", type=click.Choice(list(SCORERS)),
              help="gmm: -log-likelihood; knn: distance to reference neighbours; recon: AE/VAE reconstruction error; "
                   "mirror: the log-odds of a left-right flip, from a classifier the reference teaches itself with its "
                   "own mirror images (finds flipped films; needs `embed --mirror`, best with --features grid).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for scores.csv, histogram.png, metrics.json.")
@click.option("--reference", default="train",
              help="Images that define normal: a split (train, val, test), all, or a file of image ids "
                   "(one per line, or a CSV with an image_id column).")
@click.option("--components", type=click.IntRange(min=1), default=6, help="gmm mixture components.")
@click.option("--k", type=click.IntRange(min=1), default=5, help="knn neighbours.")
@click.option("--percentile", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=95.0,
              help="Flag images scoring above this percentile of the reference scores.")
@click.option("--pca", default="50", help=_PCA_HELP + " (gmm, knn, mirror)")
@_features_option
@click.option("--seed", default=0, help="Random seed.")
def anomaly(embeddings: Path, method: str, out: Path, reference: str, components: int, k: int,
            percentile: float, pca: str, features: str, seed: int) -> None:
    """Score every image of EMBEDDINGS for how unlike the reference it is, and flag the tail.

    Writes OUT/scores.csv, OUT/histogram.png and OUT/metrics.json (AUROC / AP against the
    QC anomaly labels when the file has them).
    """
    from ptxssl.analysis.anomaly import run_anomaly
    from ptxssl.analysis.cluster import parse_pca

    pca_value = parse_pca(pca)
    echo_config("anomaly", dict(embeddings=embeddings, method=method, out=out, reference=reference,
                                components=components, k=k, percentile=percentile, pca=pca_value,
                                features=features, seed=seed))
    result = run_anomaly(embeddings, out, method, reference=reference, components=components, k=k,
                         percentile=percentile, pca=pca_value, features=features, seed=seed)
    click.echo(f"threshold {result['threshold']:.4g} ({percentile:g}th percentile of {result['reference_images']} "
               f"reference images): {result['flagged']} flagged ({result['flagged_fraction']:.1%})")
    if "labels" in result:
        lab = result["labels"]
        click.echo(f"  vs QC labels: AUROC {lab['auroc']:.3f}, AP {lab['average_precision']:.3f}, "
                   f"recall {lab['recall_at_threshold']:.1%} at the threshold")
        for kind, m in lab["per_kind"].items():
            click.echo(f"    {kind:<10} AUROC {m['auroc']:.3f}  AP {m['average_precision']:.3f}  "
                       f"({m['images']} images)")
    click.echo("wrote " + ", ".join(result["paths"].values()))


@cli.command()
@click.argument("embeddings", type=_EMB)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@click.option("--color-by", default=None, show_default=False,
              help="Label to colour by [default: anomaly, else the first label, else split].")
@click.option("--sample", type=click.IntRange(min=10), default=None, show_default=False,
              help="Embed only this many images (drawn with --seed).")
@click.option("--pca", default="50", help=_PCA_HELP)
@click.option("--n-neighbors", type=click.IntRange(min=2), default=15, help="UMAP neighbourhood size.")
@click.option("--min-dist", type=click.FloatRange(0, 1), default=0.1, help="UMAP minimum distance.")
@_features_option
@click.option("--seed", default=0, help="Random seed (the same seed gives the same picture).")
def umap(embeddings: Path, out: Path, color_by: str | None, sample: int | None, pca: str, n_neighbors: int,
         min_dist: float, features: str, seed: int) -> None:
    """Draw a 2-d UMAP of EMBEDDINGS coloured by one label."""
    from ptxssl.analysis.cluster import parse_pca, reduce
    from ptxssl.analysis.plots import save_figure, scatter_figure
    from ptxssl.analysis.plots import umap_2d as embed_2d
    from ptxssl.analysis.store import read_embeddings

    pca_value = parse_pca(pca)
    emb = read_embeddings(embeddings, features=features)
    color_by = emb.check_label(color_by) if color_by else emb.default_label()
    echo_config("umap", dict(embeddings=embeddings, out=out, color_by=color_by, sample=sample, pca=pca_value,
                             n_neighbors=n_neighbors, min_dist=min_dist, features=features, seed=seed))
    if color_by is None:
        click.echo("  note: the file has no labels or splits; all points are drawn in one colour")
    x, reduction = reduce(emb.features, pca_value, seed)
    xy, rows = embed_2d(x, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, sample=sample)
    categories = emb.categories(color_by)[rows] if color_by else ["images"] * len(rows)
    title = f"UMAP of {embeddings.name} ({len(rows)} images, {reduction['components']}-d input)"
    save_figure(scatter_figure(xy, [(color_by or features, categories)], title, seed=seed), out)
    click.echo(f"wrote {out}")


@cli.command()
@click.option("--encoder", "encoders", multiple=True, required=True,
              help="NAME=ENCODER or ENCODER, repeated: random | imagenet | imagenet:FILE | an encoder.safetensors "
                   "| a `ptxssl pretrain` run folder.")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A labelled cache (`ptxssl prepare`): probes are fitted on train images, scored on val + test.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.csv (AUROC per encoder, probe and label) and table.md.")
@click.option("--features", default="pooled", type=click.Choice(PROBE_FEATURES),
              help="pooled (global average), grid (2x2 average: keeps left from right) or latent (AE / VAE runs).")
@click.option("--bn", default=DEFAULT_BN, type=click.Choice(BN_PROTOCOLS),
              help="BatchNorm statistics of every encoder: precise (re-estimated on the probe's train images; a "
                   "random encoder also gets a BN-at-init row) or as-is.")
@click.option("--reference", default=None, show_default=False, help="Row the others are compared with [default: the "
                                                                      "first --encoder].")
@click.option("--max-images", default=1024, type=click.IntRange(min=8), help="Train and held-out images, each at most.")
@click.option("--batch-size", default=64, type=click.IntRange(min=2), help="Images per forward pass.")
@click.option("--pixels", default=8, type=click.IntRange(min=0),
              help="Add a row probing the images themselves average-pooled to N x N (no network): what a linear "
                   "probe gets from a thumbnail, a floor where findings are global; 0: no such row.")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--precision", default="auto", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
@click.option("--seed", default=0, help="Seed of random-init weights.")
@click.option("--overwrite", is_flag=True, help="Replace the files in --out.")
def probe(encoders: tuple[str, ...], data: Path, out: Path, features: str, bn: str, reference: str | None,
          max_images: int, batch_size: int, pixels: int, device: str, precision: str, seed: int,
          overwrite: bool) -> None:
    """Linear and kNN probes of several encoders on a cache's labels, side by side, each under the
    same input path and BatchNorm protocol; Δ vs a reference with paired bootstrap intervals."""
    from ptxssl.analysis.probe import run_probe
    from ptxssl.encoders import parse_encoders
    from ptxssl.errors import UserError

    if (out / "table.md").exists() and not overwrite:
        raise UserError(f"{out} already holds a probe table; pass --overwrite to replace it")
    named = parse_encoders(list(encoders))
    echo_config("probe", {"encoders": ", ".join(f"{k}={v}" for k, v in named.items()), "data": data, "out": out,
                          "features": features, "bn": bn, "reference": reference or next(iter(named)),
                          "max_images": max_images, "batch_size": batch_size, "pixels": pixels, "device": device,
                          "precision": precision, "seed": seed})
    click.echo(run_probe(named, data, out, reference, features=features, bn=bn, max_images=max_images,
                         batch_size=batch_size, device=device, seed=seed, progress=click.echo,
                         precision=precision, pixels=pixels))
