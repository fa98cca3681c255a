"""`python -m nas`: the same command as `nas`."""

from .cli import main

if __name__ == "__main__":
    main()
