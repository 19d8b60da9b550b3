import sys

from tether.agent.server import main

sys.exit(main())
