"""Examples for rmda_jax: the paper's models, datasets and the ``rmda-train`` CLI.

Needs the ``examples`` extra (flax, orbax-checkpoint, scikit-learn, matplotlib,
tqdm). Submodules are imported on demand::

    from rmda_jax.examples import models, data

``models`` (the networks), ``data`` (datasets, safe loading, augmentation),
``config`` (the flags), ``train`` (the step builders and the loop),
``checkpoint`` (Orbax checkpoints, resume checks), ``report`` (the final
table and plot), ``sharding`` (``--mesh``: training on several devices and
hosts), ``slimming`` (``--slim``: the smaller model at the end), ``xla_flags``
(rmda-train's XLA:CPU setting).
"""
