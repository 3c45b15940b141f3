"""Feature extraction: raw images and texts -> cached feature matrices.

- :mod:`~cmhbench.features.image`: any timm image model (timm's pretrained weights, random
  weights, or a local checkpoint file), pooled pre-logit features.
- :mod:`~cmhbench.features.text`: any sentence-transformers model (a Hub name or a local folder).
- :mod:`~cmhbench.features.bow`: a binary bag-of-words over tags.
- :mod:`~cmhbench.features.cache`: safetensors files keyed by (dataset, content revision, encoder).
- :mod:`~cmhbench.features.extract`: batched extraction with progress bars and the cache.
"""
