"""vitlab's version, in a leaf module so that any layer can record it without importing the package
root (which pulls in every layer)."""

#: The package version, written into summary.json, analysis.json and reports.
__version__ = "0.1.0"
