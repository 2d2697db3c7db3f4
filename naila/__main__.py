import sys

from naila.cli import main

sys.exit(main())
