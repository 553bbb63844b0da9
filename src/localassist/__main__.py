import sys

from localassist.cli.app import main

sys.exit(main())
