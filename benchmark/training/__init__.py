"""Training: one loop for every fit (``Loop``), driven by a ``Supervision`` and hooks.

- :mod:`.loop`: ``Loop`` (optimiser, one-cycle schedule, data order, augmentation, device,
  gradient clipping, logging, periodic validation), ``Recipe``, ``Streams``, ``Hook``;
- :mod:`.log`: ``TrainLog``, the training curve (loss, lr, named terms, validation);
- :mod:`.batches`: ``Batch``, seeded frame order, the shared augmentation, label checks;
- :mod:`.supervision`: the ``Supervision`` contract and ``full`` (dense cross-entropy);
- :mod:`.losses`: loss pieces shared by several methods (semantic CE, masked BCE);
- :mod:`.schedule`: the one-cycle learning-rate schedule;
- :mod:`.segmenter`: ``train_segmenter``, a closed-set segmenter fitted with its supervision;
- :mod:`.validation`: validation mIoU of a segmenter.

This is the only package that builds optimisers.
"""
