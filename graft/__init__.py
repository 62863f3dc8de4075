"""graft: transfer learning for image classifiers, from a folder of labelled images to an exported model.

The data flows one way: ``data`` -> ``backbones`` -> ``strategies`` -> ``train`` -> run directory ->
``report`` / ``predict``. The Python API in :mod:`graft.api` is what the command line calls.
"""

__version__ = "0.1.0"
