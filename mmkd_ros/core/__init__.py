"""The leaf of the package: what training, evaluation and the nodes all need, importing nothing above it."""
