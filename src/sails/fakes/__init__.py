"""Loopback stand-ins for the external services, for the demo, the tests and the benchmarks.

``archive`` (the ALMA archive's download services), ``tap`` (its TAP and DataLink services)
and ``canfar`` (the CANFAR skaha session service) speak the real protocols on 127.0.0.1, so
the real clients talk to them unchanged. What they serve comes from :mod:`sails.sim`; the
pipeline itself never imports this package.
"""
