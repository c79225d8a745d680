import sys

from logproxy.cli import main

sys.exit(main())
