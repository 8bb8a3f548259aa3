"""``python -m sails.cli.entry``: the ``sails`` command without the console script."""

from sails.cli import main

if __name__ == "__main__":
    main()
