import sys

from axsa.cli import main

sys.exit(main())
