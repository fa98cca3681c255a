"""`python -m nas`: the same command as `nas`."""

from nas.cli import main

if __name__ == "__main__":
    main()
