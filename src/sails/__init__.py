"""ALMA-SAILS: turn the ALMA Science Archive into science-ready images, unattended."""

__version__ = "0.1.0"
