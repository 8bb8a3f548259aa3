"""Data files shipped with the package (line catalogue)."""
