import sys

from zerosearch.cli import main

sys.exit(main())
