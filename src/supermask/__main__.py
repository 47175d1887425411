import sys

from supermask.cli import main

sys.exit(main())
