"""Offline tools that combine the layers: the chain, evaluation, export, diagnosis and the demo."""
