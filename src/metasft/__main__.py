"""`python -m metasft`: the same command as the `metasft` entry point (metasft.cli)."""
import sys

from metasft.cli import main

sys.exit(main())
