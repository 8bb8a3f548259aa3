"""``sails sim serve DIR``: serve simulated MOUS like the ALMA archive does, on 127.0.0.1.

Registered on the ``sim`` sub-app when it exists; otherwise ``serve_command`` is left for
the lead to wire.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from sails.cli.app import console


def serve_command(
    directory: Path = typer.Argument(..., help="Folder holding one sub-folder per MOUS."),
    port: int = typer.Option(0, "--port", help="TCP port on 127.0.0.1 (0 = any free port)."),
    verbose: bool = typer.Option(False, "--log-requests", help="Print every request."),
) -> None:
    """Serve simulated MOUS as an SRDP restore tree and as DataLink tarballs until Ctrl-C."""
    import signal
    import sys

    from sails.fakes.archive import ArchiveServer

    # SIGTERM (a test harness, `kill`) ends like Ctrl-C: the tarball cache is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ArchiveServer(directory, port=port, verbose=verbose).start()
    try:
        mous = list(server.mous_dirs())
        console.print(Text.assemble(f"serving {len(mous)} MOUS from ", (str(server.root), "bold"),
                                    f" at {server.url}"), soft_wrap=True)
        for fs in mous:
            console.print(f"  SRDP restore: {server.srdp_url(fs)}", soft_wrap=True)
            console.print(f"  DataLink:     {server.datalink_url(fs)}", soft_wrap=True)
        console.print("press Ctrl-C to stop")
        server.serve_forever()
    finally:
        server.stop()


try:
    from sails.cli.sim import sim_app
except ImportError:  # the sim sub-app is not there yet: the lead wires serve_command
    sim_app = None
else:
    sim_app.command("serve")(serve_command)
