import sys

from pydeepbench.cli import main

sys.exit(main())
