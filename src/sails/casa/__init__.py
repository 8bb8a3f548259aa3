"""Everything that imports casatools/casatasks, run as a child process from a JSON job file.

Job side only: imports the standard library, numpy and CASA (never Prefect, the catalog or
the CLI), so the same entry point runs inside a CANFAR CASA container.
"""
