"""``python -m torchwalk``: the ``torchwalk`` command line."""

from torchwalk.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
