"""``python -m sails.casa JOB.json``: run one CASA job (see :mod:`sails.casa.runner`)."""

import sys

from sails.casa.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
