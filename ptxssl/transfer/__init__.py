"""Transfer: plug an encoder into a UNet (or a classifier) and measure what it buys on SIIM.

Training
    config.py    the options of `ptxssl transfer` (both tasks; `check_task` refuses the other task's)
    model.py     the UNet: built around an init from ptxssl.encoders, saved / loaded in smp's format
    module.py    Lightning's view: input path, freezing, learning rates (TransferModule); loss (segment)
    harness.py   what both tasks share: splits, the labelled subset, best-epoch training, finishing
    run.py       `transfer --task segment`; classify.py: `--task classify` and the saved classifier
    losses.py, sampling.py, subset.py, averaging.py, protocol.py (+ protocols/*.yaml)
Evaluation
    metrics.py   Dice / SIIM score, post-processing rules (tuned, fixed, triplet, the cascade's gate)
    compare.py   grids of runs; rescore.py: a run under other rules (intervals: ptxssl/bootstrap.py);
    cascade.py   segmentation vs classifier vs both on a cache split
Inference
    predict.py   DICOMs -> masks and a SIIM RLE submission (optionally gated by a classifier)
"""
