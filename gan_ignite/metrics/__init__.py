"""GAN metrics as ignite Metrics (FID, IS, KID, PRDC, FD, CMMD, Vendi, AuthPct, FID_inf): ``networks``
turns images into features, ``scores`` computes the scores (registry: ``scores.factory.METRICS``) and
the reference statistics, ``_base``, ``timing`` and ``options`` are shared. Imports go scores ->
networks -> shared, and out of the package only to gan_ignite.errors, gan_ignite.io and gan_ignite.command.
"""
