"""`python -m highway` runs the same CLI as the `highway` command."""

from highway.cli import main

if __name__ == "__main__":
    # The guard matters: multiprocessing's spawn start method re-imports the main module
    # in each worker process, and must not start another CLI there.
    raise SystemExit(main())
