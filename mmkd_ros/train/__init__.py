"""Training recipes: ``teacher.train_teacher``, ``distill.distill`` (step in ``distill.distill_step``),
``pipeline.run_chain`` (bag -> teacher -> student -> report), and self-describing ``checkpoint``s."""
