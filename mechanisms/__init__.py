"""The attention mechanisms of attnbench, one module each, registered on import.

Every public module in this package is imported by ``attnbench.available_mechanisms()``; a new
mechanism is one new file here (see ``attnbench new``).
"""
