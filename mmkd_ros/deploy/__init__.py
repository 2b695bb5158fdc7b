"""Deployment: the ``Classifier`` the nodes run. It imports the core and the models, never training."""
