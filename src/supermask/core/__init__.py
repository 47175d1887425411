"""The core: config, deterministic init, masks, layers, conversion and checkpoints.

It knows nothing of training, data or the command line; those live on top of it
(:mod:`supermask.train`, :mod:`supermask.data`, :mod:`supermask.cli`).
"""
