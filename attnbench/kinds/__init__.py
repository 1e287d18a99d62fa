"""The study kinds, one package each; the protocol they share is :mod:`attnbench.kind`."""
