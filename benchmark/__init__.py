"""owsbench: a benchmark harness for open-world and anomaly semantic segmentation of road scenes.

Importing this package is cheap (no torch): the CLI's ``list`` and ``--help`` rely on it.
"""

__version__ = "0.1.0"
