"""`python -m bionas` is the `bionas` command."""

from bionas.cli import main

main()
