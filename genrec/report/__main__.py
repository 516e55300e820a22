"""``python -m genrec.report RUN_DIR...``: see :mod:`genrec.report`."""

from genrec.report.main import main

if __name__ == "__main__":
    raise SystemExit(main())
