"""Standard GAN metrics as ignite Metrics: FID, IS, KID, precision/recall/density/coverage, and FD
in any feature space, CMMD, Vendi, AuthPct, FID_inf.

:mod:`~gan_ignite.metrics.networks` holds the feature networks, their preprocessing and image
reading; :mod:`~gan_ignite.metrics.scores` the scores, their registry
(:data:`~gan_ignite.metrics.scores.factory.METRICS`) and the reference statistics; ``_base`` and
``timing`` are shared. Imports go one way, scores -> networks -> shared, and out of the package only
to the base modules :mod:`gan_ignite.errors` and :mod:`gan_ignite.io`.
"""
