"""Quantization of a loaded model: the YAML config format, parsed strictly (config), and fake
quantization, quantize-dequantize in the model's own dtype (fake).

May import: common.
"""
