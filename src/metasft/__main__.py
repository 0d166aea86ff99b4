"""`python -m metasft`: the same command as the `metasft` entry point (metasft.cli)."""
import sys

try:
    from metasft.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules load: nothing has started
    print("metasft: interrupted: nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
