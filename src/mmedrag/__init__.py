"""mmedrag: multimodal retrieval-augmented generation for medical vision-language models."""

__version__ = "0.1.0"
