"""Training: ``teacher.train_teacher`` and ``distill.distill`` (recipes), their one epoch loop
(``loop.fit``), the objective terms (``objectives``), the config and its table of methods (``config``)."""
