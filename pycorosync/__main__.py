import sys

from pycorosync.cli import main

sys.exit(main())
