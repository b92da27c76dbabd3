"""GAN metrics as ignite Metrics: ``networks`` turns images into features, ``scores`` computes the scores
(registry: ``scores.factory.METRICS``) and the reference statistics. Imports go scores -> networks ->
``_base`` / ``timing`` / ``options``, and out of the package only to gan_ignite.errors, .io and .command."""
