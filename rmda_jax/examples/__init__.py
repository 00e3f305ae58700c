"""Examples for rmda_jax: the paper's models, datasets and the ``rmda-train`` CLI.

Needs the ``examples`` extra (flax, orbax-checkpoint, scikit-learn, matplotlib,
tqdm). Submodules are imported on demand::

    from rmda_jax.examples import models, data
"""
