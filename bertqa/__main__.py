import sys

from bertqa.cli import main

sys.exit(main())
