"""The encoder layer every stage shares (as smp's `encoders/` sits under its models).

    build.py     build and check an smp encoder by arch; feature sizes from the built encoder
    input.py     the ONE input path: resize (antialiased), channel planes, normalisation
    features.py  the deepest feature map and its global average, read from [0, 1] images
    file.py      the encoder file contract: encoder.safetensors + encoder.json
    inits.py     the inits registry: random, imagenet, imagenet:FILE, an encoder file or run
    protocol.py  the evaluation protocol: BatchNorm statistics re-estimated (precise) or as-is

It imports no stage (datasets, engine, pretrain, analysis, transfer, report, cli): every
stage imports it.
"""
from ptxssl.encoders.build import (DEFAULT_ARCH, STUDY_ARCHS, build_encoder, check_arch, feature_dim, first_conv,
                                   input_channels)
from ptxssl.encoders.features import deepest, grid, grid_of, pooled
from ptxssl.encoders.file import META_FILE, WEIGHTS_FILE, load_encoder, read_meta, resolve_encoder_path, save_encoder
from ptxssl.encoders.inits import (INITS, init_arch, init_encoder, init_state, is_encoder_file, load_verified,
                                   parse_encoders)
from ptxssl.encoders.input import NORMALIZATION, encoder_input, fit_images, normalize, planes, resize

__all__ = ["DEFAULT_ARCH", "STUDY_ARCHS", "build_encoder", "check_arch", "feature_dim", "first_conv", "input_channels",
           "deepest", "grid", "grid_of", "pooled", "META_FILE", "WEIGHTS_FILE", "load_encoder", "read_meta",
           "resolve_encoder_path", "save_encoder", "INITS", "init_arch", "init_encoder", "init_state",
           "is_encoder_file", "load_verified", "parse_encoders", "NORMALIZATION", "encoder_input", "fit_images",
           "normalize", "planes", "resize"]
