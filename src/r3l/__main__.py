import sys

from r3l.cli import main

sys.exit(main())
