"""Trainers people already use: a Lightning callback (:mod:`supermask.integrations.lightning`, the
``lightning`` extra) and a transformers ``TrainerCallback`` (:mod:`supermask.integrations.hf`, the ``hf``
extra). Both make the trainer's own default checkpointing store a supermask model compactly (the frozen
weights, regenerated from the seed, left out; each layer checks its weight on load) and resume exactly.
Importing this package imports neither trainer."""
