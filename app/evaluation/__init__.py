"""Offline evaluation of routers on per-prompt quality datasets (``pareto eval`` / ``train``).

Everything here runs offline (numpy, matplotlib, imported lazily by the CLI); the request
path never imports this package.
"""
