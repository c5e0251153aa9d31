"""The MLflow mirror: reward models and policies in MLflow's model registry, aliases that follow
promotions, drift detection and repair, and the webhook receiver.

Importing this package does not import MLflow (that takes seconds); only a mirror that talks to
MLflow does, on first use. Import from the submodules (``mirror``, ``state``, ``webhooks``):
the package itself stays empty so that a client importing ``state`` for a model name does not
pull in the server-side mirror and SQLAlchemy.
"""
