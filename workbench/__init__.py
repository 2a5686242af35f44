"""Satellite-vision workbench: one data layer, one trainer, three tasks.

Importing this package must stay cheap (no torch): ``workbench --help`` relies on it.
"""

__version__ = "0.1.0"
