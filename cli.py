"""`python cli.py ...` runs the same app as `probe ...`."""
from probe.cli import main

if __name__ == "__main__":
    main()
