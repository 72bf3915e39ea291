"""The seed's module path: ``from nexus_final.sli.quantization import get_nf4_config, quantize_layer``."""
from layercache.quantization import (  # noqa: F401
    Linear4bit, LinearInt8, QuantizationConfig, QuantizedTensors, dequantize, dequantize_layer, get_int8_config,
    get_nf4_config, is_quantized, quantization_info, quantize_layer)

__all__ = ["get_nf4_config", "get_int8_config", "quantize_layer", "dequantize", "dequantize_layer",
           "is_quantized", "quantization_info", "QuantizationConfig", "QuantizedTensors", "Linear4bit",
           "LinearInt8"]
