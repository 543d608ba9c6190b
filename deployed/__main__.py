import sys

from deployed.run import main

sys.exit(main())
