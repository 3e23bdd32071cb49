"""Entry point of the image: run the JetStream connector around ``function/handler.py``."""

import sys

from runtime.app import main

if __name__ == "__main__":
    sys.exit(main())
