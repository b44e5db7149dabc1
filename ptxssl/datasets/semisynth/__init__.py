"""Semi-synthetic SIIM data: real radiographs as backgrounds, real SIIM mask shapes, a
rendered pneumothorax (`ptxssl synth --backgrounds DIR [--masks train-rle.csv]`).

lungs.py finds the lung fields, shapes.py picks and places a mask shape, render.py draws
the pneumothorax into it, write.py turns a folder of backgrounds into a SIIM folder.
"""
