"""Closed-set segmenters: the ``Segmenter`` contract (:mod:`.base`) and its implementations.

Every segmenter takes ``[0, 1]`` RGB images of any size and returns a :class:`SegmenterOutput`
(logits at the scaled input size, named features, optional query outputs). Implementations are
registered by id in ``owsbench.catalog.SEGMENTERS`` (lazy targets) and built from their
``Config`` and the class count; nothing here downloads weights.
"""
